"""Worker isolation: a crash or a hang of one item is an error row; the other items still finish."""

from __future__ import annotations

import os
import time


from audit_zoo import write_small_zoo
from cbn_inspect.batch import LocalExecutor, plan_tasks
from cbn_inspect.batch.executors import describe_exit, run_task_limited
from cbn_inspect.batch.records import AuditItem
from cbn_inspect.records import Settings


class _Abort:
    """Unpickling this calls os.abort(): the worker dies of SIGABRT (only with trust_code)."""

    def __reduce__(self):
        return (os.abort, ())


class _Hang:
    def __reduce__(self):
        return (time.sleep, (60,))


def test_describe_exit():
    assert describe_exit(-9).startswith("signal 9 (SIGKILL; killed from outside")
    assert describe_exit(-6) == "signal 6 (SIGABRT)"
    assert describe_exit(1) == "exit code 1"


def test_crash_and_timeout_are_rows_and_the_batch_goes_on(tmp_path):
    import torch

    good = write_small_zoo(tmp_path, 4)
    torch.save({"x": _Abort()}, tmp_path / "crash.pt")
    torch.save({"x": _Hang()}, tmp_path / "hang.pt")
    items = [AuditItem(str(p)) for p in [tmp_path / "crash.pt", *good[:2], tmp_path / "hang.pt", *good[2:]]]
    tasks = plan_tasks(items, Settings(), trust_code=True)
    started = time.monotonic()
    rows = {row.item: row for row in LocalExecutor(2, threads=1, timeout=2).run(tasks)}
    assert time.monotonic() - started < 40
    assert set(rows) == {t.item.source for t in tasks}
    crash, hang = rows[str(tmp_path / "crash.pt")], rows[str(tmp_path / "hang.pt")]
    assert (crash.error_kind, crash.error_message) == ("worker-died", "worker died: signal 6 (SIGABRT)")
    assert hang.error_kind == "timeout" and hang.error_message == "timed out after 2 s (worker killed)"
    assert hang.wall_seconds >= 2
    assert all(rows[str(p)].ok for p in good)


class _ShortHang:
    def __reduce__(self):
        return (time.sleep, (2,))


def test_time_limit_where_the_worker_cannot_be_killed(tmp_path):
    """Dask's limit: the row says timeout; the computation ends in a background thread."""
    import torch

    torch.save({"x": _ShortHang()}, tmp_path / "slow.pt")
    task = plan_tasks([AuditItem(str(tmp_path / "slow.pt"))], Settings(), trust_code=True)[0]
    row = run_task_limited(task, timeout=0.3)
    assert row.error_kind == "timeout" and "background" in row.error_message
    good = write_small_zoo(tmp_path, 1)[0]
    assert run_task_limited(plan_tasks([AuditItem(str(good))], Settings())[0], timeout=30).ok


def test_no_tasks_starts_no_worker():
    assert list(LocalExecutor(2).run([])) == []


def test_workers_see_the_coordinators_cbn_environment_of_now(tmp_path, monkeypatch):
    """A forkserver started by an earlier audit keeps its old environment: the workers get today's CBN_*."""
    from pathlib import Path

    from cbn_inspect.batch.summary import flatten_row

    sample = Path(__file__).resolve().parent.parent / "sample_checkpoints" / "digits_cnn.safetensors"
    tasks = plan_tasks([AuditItem(str(sample))], Settings(spectrum_route="auto"))
    monkeypatch.delenv("CBN_COUNTS_MIN_FREQUENCIES", raising=False)
    monkeypatch.delenv("CBN_COUNTS_MIN_SIDE", raising=False)
    before = [flatten_row(row) for row in LocalExecutor(1, threads=1).run(tasks)]  # the forkserver starts here
    monkeypatch.setenv("CBN_COUNTS_MIN_FREQUENCIES", "1")  # the counts route on the sample's small grids
    monkeypatch.setenv("CBN_COUNTS_MIN_SIDE", "1")  # and its few channels
    after = [flatten_row(row) for row in LocalExecutor(1, threads=1).run(tasks)]
    assert before[0]["route"] == "full" and after[0]["route"] != "full", (before[0]["route"], after[0]["route"])
