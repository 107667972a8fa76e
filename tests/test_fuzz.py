"""Fuzzing in the default suite: mutants of every format give documented errors only, and nothing hangs.

A property test per format (hypothesis, derandomized: the same mutants on every run) drives the mutators of
``fuzz/mutators.py`` from a seed of the committed corpus (``fuzz/corpus``, written by ``fuzz/make_corpus.py``)
through load, analysis and the reporters in this process, each case under an alarm
(``fuzz/harness.py``); TorchScript cases run in a forked child, since its loader on main still calls
``torch.jit.load``. ``fuzz/regressions/`` holds every input a fuzz run ever crashed on; each is replayed.
The long run is ``python fuzz/run_fuzz.py --format all --count 10000 --seed 1`` (or ``-m slow`` here).
"""

from __future__ import annotations

import json
import random
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fuzz import harness  # noqa: E402
from fuzz.make_corpus import FORMATS, ISOLATED, SEED_FILES  # noqa: E402
from fuzz.mutators import mutate  # noqa: E402
from fuzz.surfaces import SURFACES  # noqa: E402
from fuzz.surfaces import mutate as mutate_surface  # noqa: E402
from fuzz.surfaces import seed as surface_seed  # noqa: E402

DOCUMENTED = {2, 3, 4, 5, 6, 7, 9, 10, 11}  # 9: series step order; 10: a missing extra; 11: not executable
MUTANTS = {"torchscript": 60, "keras": 60, "h5": 60}  # forked children cost ~0.1 s each; the rest run in-process
DEFAULT_MUTANTS = 200
LIMIT_S = 10.0


@pytest.fixture(scope="module", autouse=True)
def warm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        harness.warm()


def _assert_documented(outcome, what: str) -> None:
    assert outcome.kind in ("ok", "error"), f"{what}: {outcome.kind}\n{outcome.detail}"
    if outcome.kind == "error":
        assert outcome.exit_code in DOCUMENTED, f"{what}: exit {outcome.exit_code}: {outcome.detail}"


def test_corpus_matches_the_script(tmp_path):
    """The committed seeds are what ``make_corpus.py`` writes: the same layers, a few KB each.

    (Not byte for byte: torch writes a random archive id and safetensors a hash map's order of metadata.)
    """
    from cbn_inspect.cli._layers import listing
    from cbn_inspect.loaders import load
    from fuzz.make_corpus import make

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make(tmp_path)
    for fmt in FORMATS:
        for name in SEED_FILES[fmt]:
            committed = harness.CORPUS / fmt / name
            assert 0 < committed.stat().st_size < 32_000, committed
        entry = SEED_FILES[fmt][0]
        fresh, kept = listing(load(tmp_path / fmt / entry)), listing(load(harness.CORPUS / fmt / entry))
        for data in (fresh, kept):
            data["source"].pop("path")
        assert fresh == kept, fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_seed_is_analysed(fmt, tmp_path):
    outcome = harness.check(harness.seed_files(fmt), tmp_path / "seed", limit=60)
    assert outcome.kind == "ok", outcome.detail


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutants_give_documented_errors_only(fmt, tmp_path):
    seed_case = harness.seed_files(fmt)

    @settings(max_examples=MUTANTS.get(fmt, DEFAULT_MUTANTS), derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(min_value=0, max_value=2**32 - 1))
    def property_(seed: int) -> None:
        files, description = mutate(fmt, seed_case, random.Random(seed))
        outcome = harness.check(files, tmp_path / "case", limit=LIMIT_S, isolate=fmt in ISOLATED)
        _assert_documented(outcome, f"{fmt} mutant {seed} ({description})")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        property_()


SURFACE_MUTANTS = {"series": 12}  # the newer surfaces (fuzz/surfaces.py): a series case analyses 3 checkpoints
DEFAULT_SURFACE_MUTANTS = 30


@pytest.mark.parametrize("surface", SURFACES)
def test_surface_mutants_give_documented_errors_only(surface, tmp_path):
    seed_case = surface_seed(surface)
    assert harness.check(seed_case, tmp_path / "seed", limit=60, surface=surface).kind == "ok"

    @settings(max_examples=SURFACE_MUTANTS.get(surface, DEFAULT_SURFACE_MUTANTS), derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(min_value=0, max_value=2**32 - 1))
    def property_(seed: int) -> None:
        files, description = mutate_surface(surface, seed_case, random.Random(seed))
        outcome = harness.check(files, tmp_path / "case", limit=LIMIT_S, surface=surface)
        _assert_documented(outcome, f"{surface} mutant {seed} ({description})")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        property_()


def _regressions() -> list[Path]:
    return sorted(p.parent for p in harness.REGRESSIONS.glob("*/*/case.json"))


@pytest.mark.parametrize("case", _regressions(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_corpus(case, tmp_path):
    info = json.loads((case / "case.json").read_text())
    names = [info["entry"]] + sorted(p.name for p in case.iterdir() if p.name not in ("case.json", info["entry"]))
    files = {name: (case / name).read_bytes() for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = harness.check(files, tmp_path / "case", limit=LIMIT_S * 3, isolate=info["format"] in ISOLATED,
                                surface=info.get("surface"))
    _assert_documented(outcome, f"{case.name}: {info['description']}")


def test_regression_corpus_is_not_empty():
    assert _regressions(), "fuzz/regressions/ should hold the inputs earlier fuzz runs crashed on"


@pytest.mark.slow
def test_long_fuzz_run():
    """``run_fuzz.py`` on every format (1,000 mutants each here; the documented run uses 10,000)."""
    from fuzz.run_fuzz import main

    assert main(["--format", "all", "--count", "1000", "--seed", "2", "--no-save"]) == 0
