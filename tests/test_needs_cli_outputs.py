"""``cbn-inspect needs --plot FILE --html FILE``: both files written from the report; a bad request fails before any
work, with nothing written. The analysis is replaced by the hand-built report (tests/needs_example.py) so the test
stays fast; ``test_needs_cli_real_run`` (slow) runs the real thing on the bundled 1-D demo."""

from __future__ import annotations

import pytest

from cbn_inspect.cli import main
from cbn_inspect.cli import _needs

from needs_example import example_report

DEMO_1D = "sample_checkpoints/cbn_demo_1d.safetensors"


def _call(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


@pytest.fixture
def fake_run(monkeypatch):
    calls = []

    def run(*args, **kwargs):
        calls.append(args)
        return example_report()

    monkeypatch.setattr(_needs, "_run", run)
    return calls


def test_plot_and_html_written(fake_run, tmp_path, capsys):
    plot, html = tmp_path / "needs.png", tmp_path / "needs.html"
    code = _call(["needs", "x.onnx", "--activations", "samples", "--plot", str(plot), "--html", str(html), "-q"])
    assert code in (0, None)
    assert plot.read_bytes()[:4] == b"\x89PNG"
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "needs 1,032 of 3,072" in page
    err = capsys.readouterr().err
    assert err.count("wrote ") == 2


def test_json_to_stdout_still_writes_pictures(fake_run, tmp_path, capsys):
    plot = tmp_path / "needs.svg"
    code = _call(["needs", "x.onnx", "--activations", "samples", "--json", "-", "--plot", str(plot), "-q"])
    assert code in (0, None)
    assert plot.read_text().lstrip().startswith("<?xml")
    assert capsys.readouterr().out.lstrip().startswith("{")


@pytest.mark.parametrize("flag,name", [("--plot", "needs.gif"), ("--plot", "missing/needs.png"),
                                       ("--html", "missing/needs.html")])
def test_bad_output_fails_before_any_work(fake_run, tmp_path, capsys, flag, name):
    target = tmp_path / name
    code = _call(["needs", "x.onnx", "--activations", "samples", flag, str(target), "-q"])
    assert code == 2
    assert fake_run == []  # the analysis never started
    assert not target.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


@pytest.mark.slow
def test_needs_cli_real_run(tmp_path):
    plot, html = tmp_path / "n.png", tmp_path / "n.html"
    code = _call(["needs", DEMO_1D, "--activations", "noise", "--max-inputs", "4", "--layers", r"layers\.3$",
                  "--plot", str(plot), "--html", str(html), "-q"])
    assert code in (0, None)
    assert plot.stat().st_size > 10_000 and "layers.3" in html.read_text()
