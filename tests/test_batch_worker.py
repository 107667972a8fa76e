"""One task in this process: ok rows carry the report exactly, failures become rows of their kind."""

from __future__ import annotations

import numpy as np
import pytest

from audit_zoo import SMALL, _save_safetensors
from cbn_inspect import inspect_source, report_to_dict
from cbn_inspect.batch import plan_tasks, run_task
from cbn_inspect.batch.records import AuditItem
from cbn_inspect.batch.worker import TRACE_ENV
from cbn_inspect.records import Settings
from cbn_inspect.synthetic import planted_network


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "good.safetensors"
    state, meta = planted_network(planted=(1, 4), seed=3, **SMALL)
    _save_safetensors(path, state, meta)
    return path


def task_for(path, settings=None, **kw):
    return plan_tasks([AuditItem(str(path))], settings or Settings(), **kw)[0]


def test_ok_row_holds_the_json_report(good):
    row = run_task(task_for(good))
    assert row.ok and row.error_kind is None and row.wall_seconds > 0
    expected = report_to_dict(inspect_source(str(good)))
    got = dict(row.report)
    assert got.pop("seconds") >= 0 and expected.pop("seconds") >= 0
    assert got == expected
    assert row.key.split(":")[0] == __import__("hashlib").sha256(good.read_bytes()).hexdigest()


@pytest.mark.parametrize("content, kind, exit_code", [
    (b"", "unreadable", 3),
    (b"\x00garbage" * 50, "unreadable", 3),
    (None, "no-conv-layers", 4),
])
def test_failures_become_rows_of_their_kind(tmp_path, content, kind, exit_code):
    path = tmp_path / "bad.safetensors"
    if content is None:
        _save_safetensors(path, {"fc.weight": np.ones((4, 4), np.float32)})
    else:
        path.write_bytes(content)
    row = run_task(task_for(path))
    assert (row.status, row.error_kind, row.exit_code) == ("error", kind, exit_code)
    assert str(path) in row.error_message and row.report is None
    assert row.to_dict()["settings"]["degree_metric"] == "l1"


def test_a_missing_file_is_an_error_row(tmp_path):
    row = run_task(task_for(tmp_path / "gone.pt"))
    assert row.error_kind == "unreadable" and "no such file" in row.error_message


def test_a_bad_key_is_a_usage_row(tmp_path):
    import torch

    path = tmp_path / "m.pt"
    torch.save({"w.weight": torch.ones(2, 2, 3, 3)}, path)
    row = run_task(task_for(path, key="ema"))
    assert (row.error_kind, row.exit_code) == ("usage", 2)


def test_trace_side_channel(tmp_path, good, monkeypatch):
    monkeypatch.setenv(TRACE_ENV, str(tmp_path))
    run_task(task_for(good))
    run_task(task_for(tmp_path / "gone.pt"))
    assert (tmp_path / "computed.txt").read_text().splitlines() == [str(good), str(tmp_path / "gone.pt")]
