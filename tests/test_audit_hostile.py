"""Audit over hostile folder entries: a FIFO, a /dev/zero link, a sparse 256 GiB file, a looping item; and
workers that do not outlive a killed coordinator.

Robust under load (issue 22): no check leans on a time limit that ordinary work could hit on a busy
machine. The hostile folder runs without a time limit (it must return on its own); the looping item runs
alone with a short limit that only it can reach; every wait is a deadline many times what the protection
needs, checked in a thread, so a broken protection fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audit_zoo import write_small_zoo
from cbn_inspect.batch import run_audit
from cbn_inspect.batch.records import AuditItem
from cbn_inspect.batch.sources import HashTimeout, content_hash
from cbn_inspect.records import Settings

REPO = Path(__file__).resolve().parents[1]


class _Loop:
    """Unpickling this (only with trust_code) touches ``marker`` and then loops forever."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        code = f"open({self.marker!r}, 'w').close()\nimport time\nwhile True: time.sleep(0.05)"
        return (exec, (code,))


SPARSE_SIZE = 256 * 2**30  # reading this many bytes of holes would take minutes on any disk: the bounds
# below are generous for a loaded machine and still far below what a read of the holes would need
DEADLINE_S = 240.0  # a run that has not returned by then hangs: the test fails instead of hanging too


def _sparse(path: Path, size: int = SPARSE_SIZE) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def _audit_within(deadline: float, *args, **kwargs):
    """``run_audit`` in a thread: its result, or a failure once ``deadline`` passes (a hang fails the test)."""
    import threading

    out: dict = {}

    def work() -> None:
        try:
            out["result"] = run_audit(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), f"the audit did not return within {deadline:g} s"
    if "error" in out:
        raise out["error"]
    return out["result"], time.monotonic() - started


def test_hash_refuses_special_files_and_skips_holes(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.safetensors"
    zero.symlink_to("/dev/zero")
    started = time.monotonic()
    assert content_hash(AuditItem(str(fifo))).startswith("unreadable-")
    assert content_hash(AuditItem(str(zero))).startswith("unreadable-")
    sparse = _sparse(tmp_path / "sparse.safetensors")
    first = content_hash(AuditItem(str(sparse)))
    assert first == content_hash(AuditItem(str(sparse))) and not first.startswith("unreadable")
    assert time.monotonic() - started < 60  # the 256 GiB of holes are not read (that would take many minutes)
    with (tmp_path / "dense.bin").open("wb") as handle:
        handle.write(os.urandom(2**20) * 64)
    with pytest.raises(HashTimeout):
        content_hash(AuditItem(str(tmp_path / "dense.bin")), timeout=1e-6)


def test_audit_of_a_hostile_folder_finishes_with_error_rows(tmp_path):
    """Special files, holes and a grid of 4096 are error rows, without any time limit to lean on: the
    run must return on its own (a blocked read would hang it, and the deadline fails the test)."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    good = write_small_zoo(folder, 1)[0]
    os.mkfifo(folder / "pipe.safetensors")
    (folder / "zero.safetensors").symlink_to("/dev/zero")
    _sparse(folder / "sparse.safetensors")
    from safetensors.numpy import save_file

    save_file({"conv.weight": np.ones((64, 64, 3, 3), np.float32)}, str(folder / "grid4096.safetensors"),
              metadata={"cbn_inspect.grid": "4096"})
    result, _ = _audit_within(DEADLINE_S, [str(folder)], Settings(max_memory_mb=2000), trust_code=True,
                              timeout=None, jobs=2, threads=1)
    rows = {Path(row.item).name: row for row in result.rows}
    assert rows[good.name].ok
    for name in ("pipe.safetensors", "zero.safetensors", "sparse.safetensors"):
        assert rows[name].error_kind == "unreadable", (name, rows[name])
    assert "not a regular file" in rows["pipe.safetensors"].error_message
    big = rows["grid4096.safetensors"]
    assert big.error_kind == "resource-limit" and big.exit_code == 7 and "grid 4096x4096" in big.error_message


def test_a_looping_item_is_killed_at_the_time_limit(tmp_path):
    """The loop never ends: only the time limit ends it, whatever the machine's load (the deadline of the
    whole run is many times the limit, so only a broken limit reaches it)."""
    import torch

    folder = tmp_path / "zoo"
    folder.mkdir()
    good = write_small_zoo(folder, 1)[0]
    torch.save({"x": _Loop(str(tmp_path / "loop-started"))}, folder / "loop.pt")
    result, elapsed = _audit_within(DEADLINE_S, [str(folder)], Settings(max_memory_mb=2000), trust_code=True,
                                    timeout=3, jobs=2, threads=1)
    rows = {Path(row.item).name: row for row in result.rows}
    assert rows["loop.pt"].error_kind == "timeout" and rows["loop.pt"].exit_code == 7
    assert "timed out after 3 s" in rows["loop.pt"].error_message
    assert (tmp_path / "loop-started").exists()  # it did loop, in a worker, until killed
    assert rows[good.name].ok or rows[good.name].error_kind == "timeout"  # a slow machine may time it out too
    assert elapsed < DEADLINE_S


_COORDINATOR = """
import sys
from cbn_inspect.batch import run_audit
run_audit([sys.argv[1]], trust_code=True, jobs=1, threads=1)
"""


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_coordinator(tmp_path):
    import torch

    marker = tmp_path / "loop-started"
    torch.save({"x": _Loop(str(marker))}, tmp_path / "loop.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    coordinator = subprocess.Popen([sys.executable, "-c", _COORDINATOR, str(tmp_path / "loop.pt")], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline and coordinator.poll() is None, "the worker never started the item"
            time.sleep(0.1)
        family = _descendants(coordinator.pid)
        assert family, "no worker process found"
    finally:
        os.kill(coordinator.pid, signal.SIGKILL)
        coordinator.wait()
    deadline = time.monotonic() + 60  # they die within a second; the margin is for a loaded machine only
    while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in family if _alive(pid)]
    for pid in survivors:  # do not leave them behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} process(es) outlived the coordinator"
