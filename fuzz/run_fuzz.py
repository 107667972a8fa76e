"""The long fuzzing run, on demand: N mutants per format through load + analysis + reporters, in-process.

    python fuzz/run_fuzz.py --format all --count 10000 --seed 1
    python fuzz/run_fuzz.py --format onnx,sharded --count 2000 --seed 7 --limit 5

Mutant ``i`` of format ``f`` is drawn from ``random.Random(f"{seed}:{f}:{i}")``, so a run is reproducible
and a reported case can be replayed alone (``--only I``). Each case has a time limit (``--limit``, seconds):
in-process with an alarm, or in a forked child (``--isolate``; always for TorchScript, whose loader on main
still calls ``torch.jit.load``, native code that an alarm cannot interrupt). Prints, per format: mutants,
documented errors by exit code, successes, internal errors and hangs. Every internal error or hang is
written to ``fuzz/regressions/<format>/<id>/`` (the mutant's files and ``case.json``), the regression corpus
that ``tests/test_fuzz.py`` replays. The exit status is 1 when any case was an internal error or a hang.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.harness import CORPUS, REGRESSIONS, check, seed_files, warm  # noqa: E402
from fuzz.make_corpus import FORMATS, ISOLATED  # noqa: E402
from fuzz.mutators import mutate  # noqa: E402
from fuzz.surfaces import SURFACES  # noqa: E402
from fuzz.surfaces import mutate as mutate_surface  # noqa: E402
from fuzz.surfaces import seed as surface_seed  # noqa: E402


def save_case(fmt: str, case_id: str, files: dict[str, bytes], description: str, detail: str,
              root: Path = REGRESSIONS) -> Path:
    folder = root / fmt / case_id
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    info = {"format": fmt, "entry": next(iter(files)), "description": description, "detail": detail[-2000:]}
    if fmt in SURFACES:
        info["surface"] = fmt
    (folder / "case.json").write_text(json.dumps(info, indent=1) + "\n")
    return folder


def fuzz_format(fmt: str, count: int, seed: int, limit: float, isolate: bool, work: Path, save: Path | None,
                only: int | None = None, quiet: bool = False) -> Counter:
    surface = fmt if fmt in SURFACES else None
    seed_case = surface_seed(fmt) if surface else seed_files(fmt, CORPUS)
    counts: Counter = Counter()
    started = time.perf_counter()
    indices = [only] if only is not None else range(count)
    for i in indices:
        rng = random.Random(f"{seed}:{fmt}:{i}")
        files, description = (mutate_surface if surface else mutate)(fmt, seed_case, rng)
        outcome = check(files, work / fmt, limit=limit, isolate=isolate, surface=surface)
        counts["mutants"] += 1
        key = f"exit {outcome.exit_code}" if outcome.kind == "error" else outcome.kind
        counts[key] += 1
        if outcome.kind in ("internal", "hang"):
            last = (outcome.detail.strip().splitlines() or [""])[-1]
            print(f"  {fmt} #{i} {outcome.kind}: {description} -> {last[:200]}", flush=True)
            if save is not None:
                save_case(fmt, f"s{seed}-{i}", files, description, outcome.detail, save)
        if not quiet and counts["mutants"] % 1000 == 0:
            rate = counts["mutants"] / (time.perf_counter() - started)
            print(f"  {fmt}: {counts['mutants']} mutants, {rate:.1f}/s", flush=True)
    counts["seconds"] = round(time.perf_counter() - started)
    return counts


def _line(fmt: str, counts: Counter) -> str:
    errors = sorted((k for k in counts if k.startswith("exit ")), key=lambda k: int(k.split()[1]))
    parts = ", ".join(f"{k}: {counts[k]}" for k in errors) or "none"
    return (f"{fmt:12s} mutants {counts['mutants']:6d} | documented errors {sum(counts[k] for k in errors):6d} "
            f"({parts}) | ok {counts['ok']:6d} | internal {counts['internal']} | hangs {counts['hang']} "
            f"| {counts['seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", default="all", help=f"all (the checkpoint formats), surfaces (the newer "
                        f"surfaces), or a comma-separated list of {', '.join(FORMATS + SURFACES)}")
    parser.add_argument("--count", type=int, default=1000, help="mutants per format")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=float, default=10.0, help="seconds per mutant before it counts as a hang")
    parser.add_argument("--isolate", action="store_true", help="every case in a forked child (TorchScript always)")
    parser.add_argument("--only", type=int, default=None, help="replay mutant I alone (with its format)")
    parser.add_argument("--no-save", action="store_true", help="do not write crashing inputs to fuzz/regressions/")
    args = parser.parse_args(argv)
    formats = (FORMATS if args.format == "all" else SURFACES if args.format == "surfaces"
               else tuple(args.format.split(",")))
    unknown = set(formats) - set(FORMATS) - set(SURFACES)
    if unknown:
        parser.error(f"unknown format(s): {', '.join(sorted(unknown))}")
    import warnings

    warnings.simplefilter("ignore")
    warm()
    print(f"fuzz: formats {', '.join(formats)}; {args.count} mutants each; seed {args.seed}; "
          f"limit {args.limit} s per mutant", flush=True)
    totals = {}
    with tempfile.TemporaryDirectory(prefix="cbn-fuzz-") as tmp:
        for fmt in formats:
            totals[fmt] = fuzz_format(fmt, args.count, args.seed, args.limit, args.isolate or fmt in ISOLATED,
                                      Path(tmp), None if args.no_save else REGRESSIONS, args.only)
            print(_line(fmt, totals[fmt]), flush=True)
    print("summary:")
    for fmt, counts in totals.items():
        print(_line(fmt, counts))
    bad = sum(c["internal"] + c["hang"] for c in totals.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
