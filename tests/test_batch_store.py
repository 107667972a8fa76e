"""The JSONL results file: append, read back, repair a partial last line, drop, lock."""

from __future__ import annotations

import json

import pytest

from cbn_inspect.batch.records import AuditRow
from cbn_inspect.batch.store import ResultStore, read_rows, row_line
from cbn_inspect.errors import UsageError


def ok_row(item: str, key: str = "k") -> AuditRow:
    return AuditRow(item=item, key=key, status="ok", wall_seconds=0.5,
                    report={"schema_version": "1.0", "bottleneck": {"found": True, "rank": 3}, "seconds": 0.1})


def err_row(item: str, kind: str) -> AuditRow:
    return AuditRow(item=item, key="k", status="error", error_kind=kind, error_message="boom", exit_code=3,
                    settings={"degree_metric": "l1"})


def test_row_round_trips_through_one_line():
    row = ok_row("/z/a.pt")
    line = row_line(row)
    assert line.endswith("\n") and line.count("\n") == 1
    data = json.loads(line)
    assert list(data)[:6] == ["row_format", "item", "key", "status", "error", "wall_seconds"]
    assert data["bottleneck"] == {"found": True, "rank": 3} and data["error"] is None
    back = AuditRow.from_dict(data)
    assert back == row and back.report == row.report
    err = AuditRow.from_dict(json.loads(row_line(err_row("/z/b.pt", "unreadable"))))
    assert (err.error_kind, err.error_message, err.exit_code, err.report) == ("unreadable", "boom", 3, None)


def test_appended_rows_are_read_back_and_resume_skips_them(tmp_path):
    out = tmp_path / "audit.jsonl"
    with ResultStore(out) as store:
        assert store.done == {}
        store.append(ok_row("/z/a.pt"))
        store.append(err_row("/z/b.pt", "unreadable"))
    with ResultStore(out) as store:
        assert set(store.done) == {("/z/a.pt", "k"), ("/z/b.pt", "k")}
        assert store.dropped_lines == 0


def test_a_partial_last_line_is_dropped_and_the_file_repaired(tmp_path):
    out = tmp_path / "audit.jsonl"
    good = row_line(ok_row("/z/a.pt"))
    out.write_text(good + row_line(ok_row("/z/b.pt"))[:40])  # killed mid-write
    rows, bad = read_rows(out)
    assert [r.item for r in rows] == ["/z/a.pt"] and bad == 1
    with ResultStore(out) as store:
        assert store.dropped_lines == 1 and list(store.done) == [("/z/a.pt", "k")]
        store.append(ok_row("/z/c.pt"))
    assert out.read_text() == good + row_line(ok_row("/z/c.pt"))


def test_invalid_lines_and_duplicates_are_dropped(tmp_path):
    out = tmp_path / "audit.jsonl"
    out.write_text('not json\n{"item": "x"}\n' + row_line(ok_row("/z/a.pt")) * 2)
    with ResultStore(out) as store:
        assert store.dropped_lines == 3 and len(store.done) == 1
    assert len(out.read_text().splitlines()) == 1


def test_drop_predicate_removes_rows_to_recompute(tmp_path):
    out = tmp_path / "audit.jsonl"
    out.write_text(row_line(ok_row("/z/a.pt")) + row_line(err_row("/z/b.pt", "timeout")))
    with ResultStore(out, drop=lambda row: not row.final) as store:
        assert list(store.done) == [("/z/a.pt", "k")]
    assert [r.item for r in read_rows(out)[0]] == ["/z/a.pt"]


def test_final_error_kinds():
    assert err_row("a", "unreadable").final and err_row("a", "no-conv-layers").final
    assert not err_row("a", "timeout").final and not err_row("a", "worker-died").final
    assert not err_row("a", "internal").final


def test_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "audit.jsonl"
    with ResultStore(out):
        with pytest.raises(UsageError, match="another audit"):
            ResultStore(out)
    ResultStore(out).close()  # free again


def test_unwritable_out_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot write"):
        ResultStore(tmp_path / "file" / "audit.jsonl")
