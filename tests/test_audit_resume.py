"""Resume: a killed audit leaves a valid file, and the re-run computes exactly what is missing (acceptance 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from audit_zoo import CLI, cli_env, read_jsonl, write_small_zoo
from cbn_inspect.batch import read_rows, run_audit
from cbn_inspect.batch.records import AuditItem
from cbn_inspect.batch.store import row_line
from cbn_inspect.batch.worker import TRACE_ENV, error_row
from cbn_inspect.batch import plan_tasks
from cbn_inspect.records import Settings

ITEMS = 24
KILL_AFTER = 6  # rows in the file


def write_slow_zoo(folder: Path, count: int) -> None:
    """Tiny .pt files analysed on a 48x48 grid (--grid 48): about 0.1 s each, quick to write."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(count):
        state = {f"layers.{j}.weight": torch.randn(16, 16, 3, 3, generator=gen) for j in range(6)}
        torch.save(state, folder / f"k{i:03d}.pt")


def traced(folder: Path) -> list[str]:
    path = folder / "computed.txt"
    return path.read_text().splitlines() if path.exists() else []


def complete_rows(out: Path) -> int:
    try:
        return out.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_killed_audit_resumes_without_recomputing(tmp_path):
    zoo, out = tmp_path / "zoo", tmp_path / "audit.jsonl"
    write_slow_zoo(zoo, ITEMS)
    trace1, trace2 = tmp_path / "trace1", tmp_path / "trace2"
    trace1.mkdir(), trace2.mkdir()
    args = ["audit", str(zoo), "--out", str(out), "--grid", "48", "--jobs", "2", "--quiet"]

    first = subprocess.Popen([*CLI, *args], env=cli_env(**{TRACE_ENV: str(trace1)}), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while complete_rows(out) < KILL_AFTER and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the whole process group: coordinator, forkserver, workers
    first.wait()
    assert first.returncode == -signal.SIGKILL, first.stderr.read()

    # the file is valid line by line; simulate also a line cut short by the kill
    lines = out.read_bytes().splitlines(keepends=True)
    assert all(json.loads(line) for line in lines if line.endswith(b"\n"))
    done_first = {json.loads(line)["item"] for line in lines if line.endswith(b"\n")}
    assert KILL_AFTER <= len(done_first) < ITEMS
    with out.open("ab") as handle:
        handle.write(b'{"row_format":1,"item":"/half')

    second = subprocess.run([*CLI, *args], env=cli_env(**{TRACE_ENV: str(trace2)}), capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    rows = read_jsonl(out)
    items = [r["item"] for r in rows]
    assert len(items) == ITEMS and len(set(items)) == ITEMS  # every item exactly once
    assert all(r["status"] == "ok" for r in rows)
    computed_again = traced(trace2)
    assert len(computed_again) == len(set(computed_again))  # nothing computed twice in the re-run
    assert set(computed_again) == set(items) - done_first  # only what was missing
    assert done_first <= set(traced(trace1))


def test_force_recomputes_and_retries_transient_failures(tmp_path, monkeypatch):
    paths = write_small_zoo(tmp_path / "zoo", 3)
    out = tmp_path / "audit.jsonl"
    settings = Settings()
    first = run_audit([str(tmp_path / "zoo")], settings, out=out, jobs=1)
    assert first.computed == 3 and first.exit_code == 0
    # turn one row into a timeout row, as a killed worker would have left it
    rows, _ = read_rows(out)
    task = plan_tasks([AuditItem(str(paths[1]))], settings)[0]
    timed_out = error_row(task, "timeout", "timed out after 1 s (worker killed)", 70, 1.0)
    out.write_text("".join(row_line(r) for r in rows if r.item != str(paths[1])) + row_line(timed_out))

    trace = tmp_path / "trace"
    trace.mkdir()
    monkeypatch.setenv(TRACE_ENV, str(trace))
    again = run_audit([str(tmp_path / "zoo")], settings, out=out, jobs=1)
    assert (again.computed, again.reused, again.exit_code) == (1, 2, 0)
    assert traced(trace) == [str(paths[1])]
    assert len(read_rows(out)[0]) == 3

    forced = run_audit([str(tmp_path / "zoo")], settings, out=out, jobs=1, force=True)
    assert (forced.computed, forced.reused) == (3, 0)
    assert len(read_rows(out)[0]) == 3  # replaced, not duplicated

    other = run_audit([str(tmp_path / "zoo")], Settings(degree_metric="linf"), out=out, jobs=1)
    assert other.computed == 3  # other settings: other keys
    assert len(read_rows(out)[0]) == 6
