"""Run one mutant through cbn-inspect the way a user would, and classify what came out.

``check(fmt, files, workdir)`` writes the mutant's files to a fresh folder, then loads it (no trust flag),
analyses it cheaply (``FUZZ_SETTINGS``: one thread, grids of 4), renders the terminal report and the JSON,
and returns an :class:`Outcome`: ``ok``, ``error`` (a :class:`CbnError`, with its exit code), ``internal``
(any other exception: a bug) or ``hang`` (over the time limit). In-process, a per-case ``setitimer`` alarm
raises :class:`Hang` (a ``BaseException``, so no ``except Exception`` in the code under test swallows it);
``isolate=True`` runs the case in a forked child instead, killed at the limit, for code that does not return
to Python in time (``torch.jit.load`` on main, native crashes).
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import signal
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REGRESSIONS = HERE / "regressions"


@dataclass(frozen=True)
class Outcome:
    kind: str  # ok, error, internal, hang
    exit_code: int | None = None
    detail: str = ""


class Hang(BaseException):
    """Raised by the alarm when a case runs past its time limit."""


def seed_files(fmt: str, corpus: Path = CORPUS) -> dict[str, bytes]:
    """The seed's files of a format, the file passed to ``load`` first."""
    from .make_corpus import SEED_FILES

    return {name: (corpus / fmt / name).read_bytes() for name in SEED_FILES[fmt]}


def _settings():
    from cbn_inspect.records import Settings

    return Settings(grid=(4, 4), default_grid=4, threads=1, memory_budget_mb=64)


@contextmanager
def _alarm(seconds: float):
    def ring(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def exercise(path: Path) -> None:
    """What a user's ``report`` and ``layers`` do with the file: load, analyse, render (terminal and JSON)."""
    from rich.console import Console

    from cbn_inspect.cli._layers import _table, listing
    from cbn_inspect.inspect import analyze_model
    from cbn_inspect.loaders import load
    from cbn_inspect.report import TerminalReport, to_json

    loaded = load(path)
    console = Console(file=io.StringIO(), width=80, color_system="truecolor", legacy_windows=False)
    console.print(_table(loaded, 80))
    listing(loaded)
    report = analyze_model(loaded, _settings())
    console.print(TerminalReport(report))
    to_json(report).encode("utf-8")


def _classify(path: Path, surface: str | None = None) -> Outcome:
    from cbn_inspect.errors import CbnError

    try:
        if surface is None:
            exercise(path)
        else:
            from .surfaces import exercise as exercise_surface

            exercise_surface(surface, path)
    except CbnError as error:
        if "\n" in error.one_line():
            return Outcome("internal", None, f"multi-line error message: {error.one_line()!r}")
        return Outcome("error", error.exit_code, error.one_line()[:300])
    except Hang:
        raise
    except BaseException as exc:  # noqa: BLE001 -- the point is to catch whatever the code lets out
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return Outcome("internal", None, "".join(traceback.format_exception(exc))[-3000:])
    return Outcome("ok")


def _write(files: dict[str, bytes], workdir: Path) -> Path:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name, data in files.items():
        (workdir / name).write_bytes(data)
    return workdir / next(iter(files))


def check(files: dict[str, bytes], workdir: Path, *, limit: float = 10.0, isolate: bool = False,
          surface: str | None = None) -> Outcome:
    """Run one mutant (its files, the one to load first) and classify the outcome; ``surface`` names one of
    :data:`fuzz.surfaces.SURFACES` (exercised its own way), None a checkpoint format."""
    path = _write(files, workdir)
    if isolate:
        return _check_forked(path, limit, surface)
    try:
        with _alarm(limit):
            return _classify(path, surface)
    except Hang:
        return Outcome("hang", None, f"over {limit} s")


def warm() -> None:
    """Import everything a case uses, so that a forked child starts ready (imports cost seconds)."""
    import onnx  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (torch imports it, and sympy, lazily on some corrupt pickles: seconds)
    import torch.jit  # noqa: F401
    from rich.console import Console  # noqa: F401

    import cbn_inspect.analysis  # noqa: F401
    import cbn_inspect.cli._layers  # noqa: F401
    import cbn_inspect.inspect  # noqa: F401
    import cbn_inspect.loaders._identify  # noqa: F401
    import cbn_inspect.loaders._onnx  # noqa: F401
    import cbn_inspect.loaders.pytorch._torchscript  # noqa: F401
    import cbn_inspect.report  # noqa: F401
    from cbn_inspect.analysis import configure_threads

    configure_threads(1)
    if not _WARM:  # every seed once, without a time limit: an alarm must never land inside a first import
        _WARM.append(True)
        import tempfile

        from .make_corpus import FORMATS

        with tempfile.TemporaryDirectory(prefix="cbn-fuzz-warm-") as tmp:
            for fmt in FORMATS:
                outcome = _classify(_write(seed_files(fmt), Path(tmp) / fmt))
                assert outcome.kind == "ok", (fmt, outcome)
            from .surfaces import SURFACES, seed

            for surface in SURFACES:
                outcome = _classify(_write(seed(surface), Path(tmp) / surface), surface)
                assert outcome.kind == "ok", (surface, outcome)


_WARM: list[bool] = []


def _check_forked(path: Path, limit: float, surface: str | None = None) -> Outcome:
    import select
    import time

    warm()

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the case, send the outcome, leave without cleanup handlers
        code = 0
        try:
            os.close(read)
            outcome = _classify(path, surface)
            os.write(write, pickle.dumps(outcome))
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    deadline = time.monotonic() + limit
    chunks = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return Outcome("hang", None, f"over {limit} s (child killed)")
            ready, _, _ = select.select([read], [], [], left)
            if ready:
                chunk = os.read(read, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read)
    _, status = os.waitpid(pid, 0)
    if chunks:
        return pickle.loads(b"".join(chunks))
    return Outcome("internal", None, f"child died without an outcome (wait status {status})")
