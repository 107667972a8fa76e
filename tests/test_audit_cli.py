"""`cbn-inspect audit` end to end on a mixed zoo of 30 checkpoints (acceptance 1 and 2 of issue 6)."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from audit_zoo import CORRUPT, NO_CONV, OK_COUNT, read_jsonl, run_cli, write_mixed_zoo
from cbn_inspect.batch.records import BATCH_FIELDS
from cbn_inspect.cli import app
from cbn_inspect.errors import SOME_ITEMS_FAILED_EXIT


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    zoo = write_mixed_zoo(tmp_path_factory.mktemp("zoo"))
    out = zoo.parent / "audit.jsonl"
    table = zoo.parent / "audit.csv"
    done = run_cli("audit", str(zoo), "--out", str(out), "--csv", str(table), "--jobs", "2")
    return zoo, out, table, done


def test_exit_code_and_row_counts(audited):
    zoo, out, _, done = audited
    assert done.returncode == SOME_ITEMS_FAILED_EXIT, done.stderr
    rows = read_jsonl(out)
    assert len(rows) == 30 and len({r["item"] for r in rows}) == 30
    assert sum(r["status"] == "ok" for r in rows) == OK_COUNT
    errors = {r["item"]: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {str(zoo / name) for name in (*CORRUPT, NO_CONV)}
    assert errors[str(zoo / "corrupt/empty.safetensors")]["message"].endswith("empty file")
    assert "not a valid safetensors file" in errors[str(zoo / "corrupt/truncated.safetensors")]["message"]
    assert "not a recognised checkpoint" in errors[str(zoo / "corrupt/garbage.pt")]["message"]
    assert {e["type"] for n, e in errors.items() if "corrupt" in n} == {"unreadable"}
    assert errors[str(zoo / NO_CONV)]["type"] == "no-conv-layers"
    assert errors[str(zoo / NO_CONV)]["exit_code"] == 4
    assert not any(".hidden" in r["item"] or "-of-00002" in r["item"] for r in rows)


def test_summary_on_stdout_progress_and_failures_on_stderr(audited):
    _, _, _, done = audited
    assert "30 items: 26 ok, 4 failed (1 no-conv-layers, 3 unreadable)" in " ".join(done.stdout.split())
    assert "empty.safetensors: unreadable:" in done.stderr


def test_ok_rows_equal_the_report_command_json(audited):
    """Acceptance 2: report fields of every ok row == `cbn-inspect ITEM --json -` (timing aside)."""
    _, out, _, _ = audited
    runner = CliRunner()
    checked = 0
    for row in read_jsonl(out):
        if row["status"] != "ok":
            continue
        result = runner.invoke(app, ["report", row["item"], "--json", "-"])
        assert result.exit_code == 0, result.output
        expected = json.loads(result.stdout)
        report = {k: v for k, v in row.items() if k not in BATCH_FIELDS}
        assert list(report) == list(expected)  # same fields, same order
        report.pop("seconds"), expected.pop("seconds")
        assert report == expected, row["item"]
        checked += 1
    assert checked == OK_COUNT


def test_csv_has_a_line_per_item(audited):
    _, _, table, _ = audited
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 30
    assert {r["status"] for r in rows} == {"ok", "error"}
    assert sum(r["bottleneck_found"] == "True" for r in rows) >= 10  # the planted safetensors


def test_rerun_reuses_every_row(audited):
    zoo, out, _, _ = audited
    before = out.read_text()
    again = CliRunner().invoke(app, ["audit", str(zoo), "--out", str(out), "--quiet"])
    assert again.exit_code == SOME_ITEMS_FAILED_EXIT
    assert out.read_text() == before
    assert again.stdout == ""
    assert again.stderr.count(": unreadable: ") == 3  # --quiet still names the failures


def test_usage_errors_exit_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["audit", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such file or folder" in result.output
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 2 and "no checkpoints found" in result.output
    (tmp_path / "a.pt").write_bytes(b"x")
    result = runner.invoke(app, ["audit", str(tmp_path), "--executor", "dask"])
    assert result.exit_code == 2 and "--scheduler" in result.output
    result = runner.invoke(app, ["audit", str(tmp_path), "--tolerance", "energy", "--tol-value", "2"])
    assert result.exit_code == 2 and "energy" in result.output
    result = runner.invoke(app, ["audit", str(tmp_path), "--timeout", "0"])
    assert result.exit_code == 2 and "--timeout" in result.output


def test_audit_is_a_subcommand_not_a_report_source():
    from cbn_inspect.cli import route

    assert route(["audit", "zoo/"]) == ["audit", "zoo/"]
    assert route(["model.pt"]) == ["report", "model.pt"]
