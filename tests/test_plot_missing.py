"""Without the plotting extra (issue 11): --plot fails with one line naming it, --html still works, and
nothing else changes. matplotlib and pandas are hidden in a subprocess (``sys.modules[name] = None`` makes
every ``import name`` raise ImportError), exactly as if they were not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "sample_checkpoints" / "cbn_demo_1d.safetensors"
HIDE = "import sys\nfor name in ('matplotlib', 'pandas'):\n    sys.modules[name] = None\n"


def run(*args: str, hide: bool = True, code: str | None = None) -> subprocess.CompletedProcess:
    prelude = HIDE if hide else ""
    body = code or "from cbn_inspect.cli import main\nmain(sys.argv[1:])\n"
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-c", "import sys\n" + prelude + body, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_plot_fails_with_one_line_naming_the_extra(tmp_path):
    out = tmp_path / "f.png"
    result = run(DEMO, "--plot", out)
    assert result.returncode == 10, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cbn-inspect: error: ") and "pip install 'cbn-inspect[plot]'" in lines[0]
    assert "matplotlib" in lines[0]
    assert result.stdout == "" and not out.exists()  # it failed before the analysis


def test_html_still_works_with_a_note(tmp_path):
    out = tmp_path / "r.html"
    result = run(DEMO, "--html", out)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "figures omitted" in page and "cbn-inspect[plot]" in page
    assert "data:image/png" not in page and '<svg class="heat"' in page
    assert page.count("<tr class=") == 12


def _stable(text: str) -> dict:
    data = json.loads(text)
    data.pop("seconds")
    return data


def test_everything_else_is_unchanged(tmp_path):
    a, b = tmp_path / "hidden.json", tmp_path / "normal.json"
    hidden, normal = run(DEMO, "--json", a), run(DEMO, "--json", b, hide=False)
    assert hidden.returncode == normal.returncode == 0
    assert hidden.stdout == normal.stdout and "kept modes by degree" in hidden.stdout
    assert _stable(a.read_text()) == _stable(b.read_text())
    audit = run("audit", DEMO, "--html", tmp_path / "zoo.html", "--jobs", "1", "--quiet")
    assert audit.returncode == 0, audit.stderr
    assert "cbn_demo_1d.safetensors" in (tmp_path / "zoo.html").read_text()


def test_library_without_extras():
    code = ("import cbn_inspect\nr = cbn_inspect.analyze(sys.argv[1])\nprint(len(r._repr_html_()) > 1000)\n"
            "try:\n    r.to_frame()\nexcept cbn_inspect.CbnError as e:\n    print('frame:', e.one_line())\n"
            "try:\n    r.plot()\nexcept cbn_inspect.CbnError as e:\n    print('plot:', e.one_line())\n"
            "print('matplotlib' in sys.modules and sys.modules['matplotlib'] is not None)\n")
    result = run(DEMO, code=code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("frame: to_frame() needs pandas") and "pip install" in lines[1]
    assert lines[2].startswith("plot: figures need matplotlib") and "cbn-inspect[plot]" in lines[2]
    assert lines[3] == "False"
