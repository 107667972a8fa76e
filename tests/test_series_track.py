"""``cbn-inspect track`` on the bundled training series (sample_checkpoints/cbn_demo_1d_run/): no bottleneck at
step 0, the final sample's bottleneck at the last step, the step it first appears; JSON, figure, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cbn_inspect.report.series_json import series_to_dict, validate_series
from cbn_inspect.series import build_series, read_monitor_file, run_track

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "sample_checkpoints" / "cbn_demo_1d_run"
FINAL_SAMPLE = ROOT / "sample_checkpoints" / "cbn_demo_1d.safetensors"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One CLI run with every output: terminal text, JSON, figure and the JSONL store."""
    from typer.testing import CliRunner

    from cbn_inspect.cli import app, route

    tmp = tmp_path_factory.mktemp("track")
    paths = {"out": tmp / "run.jsonl", "json": tmp / "series.json", "plot": tmp / "series.png", "trace": tmp}
    args = ["track", str(RUN), "--out", str(paths["out"]), "--json", str(paths["json"]), "--plot",
            str(paths["plot"]), "--jobs", "2"]
    result = CliRunner().invoke(app, route(args), env={"COLUMNS": "80", "CBN_INSPECT_AUDIT_TRACE": str(tmp)})
    assert result.exit_code == 0, result.output
    return result, paths, json.loads(paths["json"].read_text())


def test_series_is_small_and_in_step_order():
    files = sorted(RUN.glob("*.safetensors"))
    assert sum(f.stat().st_size for f in files) < 2_000_000
    assert [f.name for f in files] == [f"step_{s:04d}.safetensors" for s in range(0, 4001, 400)]
    figure = ROOT / "docs" / "track_cbn_demo_1d.png"  # the README's figure
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size < 300_000


def test_no_bottleneck_at_step_0_and_the_final_samples_at_the_end(tracked, cli):
    _, _, data = tracked
    validate_series(data)
    assert data["steps"] == list(range(0, 4001, 400))
    assert data["step_source"] == "safetensors __metadata__ global_step"
    first, last = data["points"][0]["bottleneck"], data["points"][-1]["bottleneck"]
    assert first["found"] is False and first["strength"] == 0
    final = cli.json(str(FINAL_SAMPLE))["bottleneck"]
    keys = ("found", "start", "end", "rank", "type", "strength_label")
    assert {k: last[k] for k in keys} == {k: final[k] for k in keys}
    assert (last["start"], last["end"], last["rank"]) == ("layers.1", "layers.10", 7)
    # when it first appears: the first step whose checkpoint has a bottleneck, and none before it
    found = [p["step"] for p in data["points"] if p["bottleneck"]["found"]]
    assert data["first_found"]["step"] == found[0] == 1200
    assert all(p["bottleneck"]["found"] for p in data["points"] if p["step"] >= 1200)
    assert data["settled"]["step"] == 1200 and data["final"]["step"] == 4000


def test_terminal_shows_the_table_and_the_story(tracked):
    result, _, data = tracked
    text = result.stdout
    assert "step 0: no bottleneck" in text
    assert "first appears at step 1200: layers.1 → layers.10, rank 7" in text
    assert "settles from step 1200" in text and "at the last step, 4000: strength 0.97 (strong)" in text
    row = next(line for line in text.splitlines() if line.startswith("layers.5 "))
    assert row.split()[1:] == [str(v) for v in data["layers"][5]["mode_count"]]
    assert max(len(line) for line in text.splitlines()) <= 80


def test_readme_shows_what_track_prints(tracked):
    result, _, _ = tracked
    readme = (ROOT / "README.md").read_text()
    block = readme.split("cbn-inspect track sample_checkpoints/cbn_demo_1d_run/ --plot", 1)[1]
    block = block.split("```text\n", 1)[1].split("```", 1)[0]
    head, tail = block.split("...\n")
    printed = [line.rstrip() for line in result.stdout.splitlines()]
    assert head.splitlines() == printed[: len(head.splitlines())]
    assert tail.splitlines() == printed[-len(tail.splitlines()):]


def test_layer_tracks_equal_the_checkpoints_reports(tracked, cli):
    _, _, data = tracked
    report = cli.json(str(RUN / "step_0800.safetensors"))
    i = data["steps"].index(800)
    for layer, track in zip(report["layers"], data["layers"]):
        assert track["name"] == layer["name"]
        assert track["mode_count"][i] == layer["mode_count"]
        assert track["gap_ratio"][i] == layer["gap_ratio"]
        assert track["utilisation"][i] == layer["utilisation"]
        assert track["degree_counts"][i] == layer["degree_counts"]


def test_figure_is_a_sane_image_of_the_series_counts(tracked):
    from PIL import Image

    _, paths, data = tracked
    with Image.open(paths["plot"]) as image:
        image.verify()
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and 500 <= image.width <= 1600 and 400 <= image.height <= 1200
    assert 10_000 < paths["plot"].stat().st_size < 300_000
    # the drawn data is the series' own numbers
    import matplotlib

    matplotlib.use("Agg")
    from cbn_inspect.report.series_figures import plot_series

    series = run_track([str(RUN)], out=paths["out"])  # all reused from the store
    fig = plot_series(series)
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    for track in data["layers"]:
        line = lines[track["name"]]
        assert list(line.get_xdata()) == data["steps"]
        assert list(line.get_ydata()) == track["mode_count"]
    strength = next(line for line in fig.axes[1].lines if line.get_label() == "strength")
    assert list(strength.get_ydata()) == [p["bottleneck"]["strength"] for p in data["points"]]


def test_resume_analyses_nothing_again(tracked, tmp_path, monkeypatch):
    _, paths, _ = tracked
    computed = (paths["trace"] / "computed.txt").read_text().splitlines()
    assert len(computed) == 11  # each checkpoint analysed once
    monkeypatch.setenv("CBN_INSPECT_AUDIT_TRACE", str(tmp_path))
    again = run_track([str(RUN / "step_4000.safetensors"), str(RUN / "step_0000.safetensors")], out=paths["out"])
    assert not (tmp_path / "computed.txt").exists()
    assert again.steps == (0, 4000)


def test_globs_and_a_monitor_file(tracked, tmp_path):
    _, paths, data = tracked
    series = run_track([str(RUN / "step_[0-1]*.safetensors")], out=paths["out"])
    assert series.steps == (0, 400, 800, 1200, 1600)
    # a Monitor JSONL file is a series already: the same numbers, nothing analysed
    rows = [json.loads(line) for line in paths["out"].read_text().splitlines()]
    monitor = tmp_path / "monitor.jsonl"
    with monitor.open("w") as handle:
        for row in rows:
            report = {k: v for k, v in row.items() if k not in ("row_format", "item", "key", "status", "error",
                                                                   "wall_seconds")}
            step = int(report["source"]["metadata"]["step"])
            handle.write(json.dumps({"step": step, **report}) + "\n")
    from_monitor = series_to_dict(run_track([str(monitor)]))
    validate_series(from_monitor)
    assert [t["mode_count"] for t in from_monitor["layers"]] == [t["mode_count"] for t in data["layers"]]
    assert from_monitor["first_found"]["step"] == 1200


def test_a_failed_checkpoint_is_a_failed_point(tmp_path, cli):
    import shutil

    for step in (0, 4000):
        shutil.copy(RUN / f"step_{step:04d}.safetensors", tmp_path / f"step_{step:04d}.safetensors")
    (tmp_path / "step_2000.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    result = cli("track", str(tmp_path), "--order", "name", "--jobs", "1", "--json", "-")
    assert result.exit_code == 8, result.output
    data = json.loads(result.stdout)
    validate_series(data)
    assert [p["status"] for p in data["points"]] == ["ok", "error", "ok"]
    assert data["layers"][3]["mode_count"][1] is None
    assert data["final"]["step"] == 4000


def test_build_series_settles_only_when_the_call_stays(tracked):
    from cbn_inspect.series.records import SeriesPoint
    from cbn_inspect.series.steps import StepInfo

    _, paths, _ = tracked
    series = run_track([str(RUN)], out=paths["out"])
    points = list(series.points)
    # the call moves at the last step: it has not settled before it
    last = dict(points[-1].report)
    last["bottleneck"] = {**last["bottleneck"], "rank": 6}
    points[-1] = SeriesPoint(source=points[-1].source, step=StepInfo(4000, "step", "file name", "x"), report=last)
    moved = build_series(points, unit="step", step_source="test")
    assert moved.first_found == 1200 and moved.settled == 4000


def test_monitor_file_errors(tmp_path, cli):
    record = {"step": 4, "layers": [], "bottleneck": {"found": False, "reason": "", "strength": 0.0}}
    good = json.dumps(record) + "\n"
    cut = tmp_path / "cut.jsonl"
    cut.write_text(good + '{"step": 8, "lay')  # killed while writing the last line
    assert [p.step.step for p in read_monitor_file(cut)] == [4]
    twice = tmp_path / "twice.jsonl"
    twice.write_text(good + good)
    result = cli("track", str(twice))
    assert result.exit_code == 9 and "several records at step 4" in result.stderr
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    result = cli("track", str(other))
    assert result.exit_code == 3 and "line 1 is not a Monitor record" in result.stderr


def test_figure_of_many_layers_uses_a_colour_bar(tracked):
    import matplotlib

    matplotlib.use("Agg")
    from cbn_inspect.report.series_figures import plot_series
    from cbn_inspect.series.records import SeriesPoint

    _, paths, _ = tracked
    series = run_track([str(RUN)], out=paths["out"])
    points = []
    for point in series.points:  # 24 layers: the 12 twice, under new names
        report = dict(point.report)
        report["layers"] = report["layers"] + [dict(layer, name=f"copy.{layer['name']}") for layer in report["layers"]]
        points.append(SeriesPoint(source=point.source, step=point.step, report=report))
    wide = build_series(points, unit="step", step_source="test")
    fig = plot_series(wide)
    named = [line for line in fig.axes[0].lines if not line.get_label().startswith("_")]
    assert len(named) == 24 and fig.axes[0].get_legend() is None
    assert len(fig.axes) == 3  # the two panels and the colour bar


def test_plot_without_matplotlib_is_a_clear_error(cli, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = cli("track", str(RUN), "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 10
    assert "--plot needs matplotlib (pip install 'cbn-inspect[plot]')" in result.stderr
    assert not (tmp_path / "x.png").exists()
