"""Zoo audits: many checkpoints, in parallel worker processes or on a Dask cluster, resumable.

Library use::

    from cbn_inspect.batch import run_audit
    result = run_audit(["zoo/", "timm:resnet*"], out="audit.jsonl", jobs=4)
    print(len(result.failed), result.exit_code)

Data flows one way: sources -> items and keys (:mod:`.sources`) -> tasks on an executor (:mod:`.executors`,
each running :func:`.worker.run_task`) -> rows, appended to the JSONL file (:mod:`.store`) -> the summary
table and CSV (:mod:`.summary`). ``cbn-inspect audit`` (``cli/_audit.py``) is a thin layer over
:func:`run_audit`.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

# Public name -> its module, imported on first use (PEP 562): the command line expands and checks the
# sources (:mod:`.sources`, no torch) before the executors and workers are imported.
_LAZY = {
    "AuditResult": ".audit", "ProgressSink": ".audit", "plan_tasks": ".audit", "run_audit": ".audit",
    "DaskExecutor": ".executors", "LocalExecutor": ".executors", "default_jobs": ".executors",
    "AuditItem": ".records", "AuditRow": ".records", "AuditTask": ".records",
    "content_hash": ".sources", "expand_sources": ".sources",
    "ResultStore": ".store", "read_rows": ".store",
    "AuditSummary": ".summary", "flatten_row": ".summary", "write_csv": ".summary",
    "run_task": ".worker",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
