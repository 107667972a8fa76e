"""Shared fixtures: small checkpoints written by the tests themselves, and a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cbn_inspect.cli import app, route
from cbn_inspect.synthetic import planted_network, random_network

# 3 channels at frequency 0, one at each of the 4 degree-1 frequencies, one at the self-conjugate
# degree-2 frequency (0, 2) of a 4x4 grid: "3 @ deg 0, 4 @ deg 1, 1 @ deg 2" (l1, per complex frequency).
PLANTED_RANKS = {(0, 0): 3, (1, 0): 1, (0, 1): 1, (0, 2): 1}
PLANTED_GRID = (4, 4)
PLANTED_RANGE = (3, 8)
DEPTH = 12


@pytest.fixture(scope="session")
def planted_path(tmp_path_factory) -> Path:
    from safetensors.numpy import save_file

    state, meta = planted_network(grid=PLANTED_GRID, channels=8, depth=DEPTH, planted=PLANTED_RANGE,
                                  ranks=PLANTED_RANKS, seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "planted.safetensors"
    save_file(state, str(path), metadata=meta)
    return path


@pytest.fixture(scope="session")
def random_path(tmp_path_factory) -> Path:
    from safetensors.numpy import save_file

    state, meta = random_network(grid=PLANTED_GRID, channels=8, depth=DEPTH, seed=2)
    path = tmp_path_factory.mktemp("ckpt") / "random.safetensors"
    save_file(state, str(path), metadata=meta)
    return path


class Cli:
    """Runs ``cbn-inspect ARGS`` in-process, with the console script's routing, stdout and stderr apart."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict | None = None):
        return self.runner.invoke(app, route([str(a) for a in args]), env=env or {"COLUMNS": "80"})

    def json(self, *args: str) -> dict:
        result = self(*args, "--json", "-")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """A private cache directory, so that no test reads or writes the user's cache."""
    monkeypatch.setenv("CBN_INSPECT_CACHE", str(tmp_path_factory.getbasetemp() / "cbn-cache"))


def pytest_addoption(parser):
    parser.addoption("--overwrite-golden", action="store_true", help="Rewrite tests/golden/* from current output.")


@pytest.fixture
def golden(request):
    """Compare text with tests/golden/NAME, or rewrite it with --overwrite-golden."""

    def check(name: str, text: str) -> None:
        path = Path(__file__).parent / "golden" / name
        if request.config.getoption("--overwrite-golden") or not path.exists():
            path.write_text(text)
        assert text == path.read_text(), f"{name} changed; rerun with --overwrite-golden if intended"

    return check
