"""A fast first contact: ``--version``, ``--help``, every subcommand's ``--help`` and usage errors return
without importing torch, numpy or timm (see the mechanism in ``cbn_inspect/cli/__init__.py``)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "numpy", "timm", "scipy", "onnx", "onnxruntime", "matplotlib", "pandas")

# Runs each invocation through the console script's main() in one fresh interpreter, then lists the heavy
# modules that got imported; every registered command's --help is added from the app itself, so a new
# subcommand is covered without touching this test.
SCRIPT = r"""
import contextlib, io, json, sys
from cbn_inspect.cli import app, main
from cbn_inspect.cli import _commands
calls = json.loads(sys.argv[1]) + [[name, "--help"] for name in sorted(_commands())]
codes = []
for argv in calls:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
    codes.append([argv, code, out.getvalue()[-300:], err.getvalue()[-300:]])
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"codes": codes, "heavy": heavy}))
"""

USAGE_ERRORS = [
    ["report", "x.pt", "--grid", "3,3"],
    ["x.pt", "--input-size", "0x"],
    ["report", "x.pt", "--tolerance", "nope"],
    ["report", "x.pt", "--bogus"],
    ["report", "x.pt", "--tol-value", "-1"],
    ["x.pt", "--activations", "noise", "--activation-side", "middle"],
    ["x.pt", "--activations", "noise", "--interpolation", "blurry"],
    ["x.pt", "--center"],
    ["layers", "x.pt", "--input-size", "3,3"],
    ["x.pt", "--layers", "["],
    ["x.pt", "--plot", "figure.txt"],
    ["audit", "no-such-folder/", "--executor", "dask"],
    ["audit"],
    ["compare", "a.pt"],
    ["track"],
    ["neds", "model.onnx"],
    ["frobnicate", "model.onnx"],
    ["reprot", "x.pt"],
    ["report"],
]


def _run(calls: list[list[str]]) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(calls), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_version_and_usage_errors_import_nothing_heavy():
    result = _run([["--help"], ["--version"], *USAGE_ERRORS])
    assert result["heavy"] == [], result["heavy"]
    codes = {tuple(argv): code for argv, code, _, _ in result["codes"]}
    assert codes[("--help",)] == 0 and codes[("--version",)] == 0
    for argv in USAGE_ERRORS:
        assert codes[tuple(argv)] == 2, (argv, codes[tuple(argv)])
    helps = [argv for argv in codes if len(argv) == 2 and argv[1] == "--help"]
    assert {"report", "audit", "layers", "track", "compare"} <= {argv[0] for argv in helps}
    assert all(codes[argv] == 0 for argv in helps)


def test_unknown_command_followed_by_a_source_names_the_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file called "frobnicate", "neds" or "reprot" here
    result = _run([["frobnicate", "model.onnx"], ["neds", "model.onnx"], ["reprot", "model.onnx"]])
    errors = {argv[0]: err for argv, _, _, err in result["codes"]}
    assert "no such command 'frobnicate' and no file of that name; the commands are" in errors["frobnicate"]
    assert "report" in errors["frobnicate"] and "needs" in errors["frobnicate"]
    assert "no such command 'neds'; did you mean 'needs'?" in errors["neds"]
    assert "no such command 'reprot'; did you mean 'report'?" in errors["reprot"]


def test_a_file_named_like_a_word_is_still_a_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "neds").write_bytes(b"not a checkpoint")
    done = subprocess.run([sys.executable, "-m", "cbn_inspect", "neds", "--grid", "3,3"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "--grid" in done.stderr and "no such command" not in done.stderr


def test_python_m_version_is_light():
    code = ("import runpy, sys; sys.argv = ['cbn-inspect', '--version']\n"
            "try:\n    runpy.run_module('cbn_inspect', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("cbn-inspect ") and done.stderr.strip() == "[]"


def test_library_names_still_resolve_lazily():
    import cbn_inspect

    for name in cbn_inspect.__all__:
        assert getattr(cbn_inspect, name) is not None
    assert "Monitor" in dir(cbn_inspect)
