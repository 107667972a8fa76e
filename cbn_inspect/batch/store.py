"""The ``--out`` JSONL file: read what an earlier run left, repair it, and append one finished row at a time.

Every row is written as one complete line with a single ``write`` on a file opened for appending, then
flushed (and fsynced), only after its item finished -- so a run killed at any moment leaves a file that is
valid line by line, except at worst a partial last line. On opening, lines that do not parse (such a partial
line) are dropped, and so are rows about to be recomputed (``--force``, retried failures); when anything is
dropped the file is rewritten through a temporary file and an atomic rename, never edited in place.

The file is locked (``flock``) while an audit writes it: a second audit on the same file is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

from ..errors import UsageError
from .records import AuditRow

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None  # type: ignore[assignment]


def row_line(row: AuditRow) -> str:
    return json.dumps(row.to_dict(), allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n"


def read_rows(path: Path) -> tuple[list[AuditRow], int]:
    """The rows of ``path`` in file order, and how many lines were not valid rows (ignored)."""
    rows: list[AuditRow] = []
    bad = 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return rows, 0
    for raw in data.splitlines(keepends=True):
        if not raw.strip():
            continue
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("partial last line")
            rows.append(AuditRow.from_dict(json.loads(raw)))
        except (ValueError, KeyError, TypeError, AttributeError):
            bad += 1
    return rows, bad


class ResultStore:
    """An open ``--out`` file. ``done`` maps row key -> the kept row of every item already finished."""

    def __init__(self, path: Path, *, drop: Callable[[AuditRow], bool] = lambda row: False) -> None:
        self.path = path
        self.dropped_lines = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UsageError(f"--out {path}: cannot write ({exc.strerror or exc})") from exc
        self._lock()
        rows, bad = read_rows(path)
        kept: dict[tuple[str, str], AuditRow] = {}
        for row in rows:
            if drop(row):
                bad += 1
            else:
                # a row appears once per (item, key); should a file hold two, the later one wins
                bad += (row.item, row.key) in kept
                kept[(row.item, row.key)] = row
        if bad:
            self._rewrite(kept.values())
        self.dropped_lines = bad
        self.done = kept

    def _lock(self) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            raise UsageError(f"--out {self.path}: another audit is writing this file") from exc

    def _rewrite(self, rows: Iterable[AuditRow]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.writelines(row_line(row) for row in rows)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        # keep appending to (and holding the lock on) the new file
        old = self._fd
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        os.close(old)
        self._lock()

    def append(self, row: AuditRow) -> None:
        """Write one finished row as one line, and make it durable before returning."""
        data = row_line(row).encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # os.write may be partial on some file systems; finish the line
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamStore:
    """``--out -``: each row as one JSON line on a stream (stdout) as it finishes; nothing to resume from."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.done: dict = {}
        self.dropped_lines = 0

    def append(self, row: AuditRow) -> None:
        self.stream.write(row_line(row))
        self.stream.flush()

    def close(self) -> None:
        pass
