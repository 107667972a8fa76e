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

from .audit import AuditResult, ProgressSink, plan_tasks, run_audit
from .executors import DaskExecutor, LocalExecutor, default_jobs
from .records import AuditItem, AuditRow, AuditTask
from .sources import content_hash, expand_sources
from .store import ResultStore, read_rows
from .summary import AuditSummary, flatten_row, write_csv
from .worker import run_task

__all__ = [
    "AuditItem", "AuditResult", "AuditRow", "AuditSummary", "AuditTask", "DaskExecutor", "LocalExecutor",
    "ProgressSink", "ResultStore", "content_hash", "default_jobs", "expand_sources",
    "flatten_row", "plan_tasks", "read_rows", "run_audit", "run_task", "write_csv",
]
