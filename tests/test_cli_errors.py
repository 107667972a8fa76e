"""One error discipline: usage errors are one `cbn-inspect: error:` line and exit 2; JSON callers get JSON."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from rich.console import Console

from cbn_inspect import SCHEMA_VERSION, inspect_source


@pytest.mark.parametrize("args,needle", [
    (["--tolerance", "foo"], "'foo' is not one of"),
    (["--degree", "l3"], "--degree"),
    (["--precision", "half"], "--precision"),
    (["--threads", "0"], "--threads"),
    (["--memory-budget", "0"], "--memory-budget"),
    (["--grid", "3x"], "--grid '3x'"),
    (["--grid", "3,3"], "--grid"),
    (["--bogus"], "No such option"),
    (["--onnx-branch", "both"], "--onnx-branch"),
])
def test_usage_errors_are_one_line_and_exit_2(cli, planted_path, args, needle):
    result = cli(planted_path, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cbn-inspect: error: ") and needle in lines[0], lines
    assert "Traceback" not in result.output and "╭" not in result.output


@pytest.mark.parametrize("text", ["224x", "3,224,224", "x224", "2 2"])
def test_input_size_parsing_is_strict(text):
    from cbn_inspect.errors import UsageError
    from cbn_inspect.loaders import parse_input_size

    with pytest.raises(UsageError):
        parse_input_size(text)
    assert parse_input_size("3x224x224") == (3, 224, 224)


def test_mistyped_subcommand_suggests_the_closest(cli, planted_path):
    result = cli("reprot", planted_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == "cbn-inspect: error: no such command 'reprot'; did you mean 'report'?"
    result = cli("layrs", planted_path)
    assert "did you mean 'layers'?" in result.stderr
    assert cli("audit").stderr.strip().startswith("cbn-inspect: error: Missing argument")


def test_a_flag_that_does_nothing_says_so(cli, planted_path):
    result = cli(planted_path, "--spectra")
    assert result.exit_code == 0
    assert "cbn-inspect: warning: --spectra does nothing without --json" in result.stderr
    assert "warning" not in cli(planted_path, "--spectra", "--json", "-").stderr


def test_json_dash_on_failure_prints_a_json_error_object(cli, tmp_path):
    result = cli(tmp_path / "missing.pt", "--json", "-")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["error"]["kind"] == "unreadable" and data["error"]["exit_code"] == 3
    assert data["schema_version"] and data["tool"]["name"] == "cbn-inspect"
    layers = cli("layers", tmp_path / "missing.pt", "--json", "-")
    assert layers.exit_code == 3 and json.loads(layers.stdout)["error"]["kind"] == "unreadable"


def test_missing_optional_extra_is_its_own_error(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real(name, *args, **kwargs)

    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x04test")
    from cbn_inspect.errors import CbnError

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(CbnError) as info:
        inspect_source(tmp_path / "m.onnx")
    assert info.value.exit_code == 10 and "cbn-inspect[onnx]" in info.value.one_line()


def test_timm_suggestions_rank_by_similarity(cli):
    result = cli("timm:resnet5")
    assert result.exit_code == 2
    assert "did you mean resnet50," in result.stderr


def test_layers_json_carries_schema_version_and_tool(cli, planted_path):
    data = json.loads(cli("layers", planted_path, "--json", "-").stdout)
    assert data["schema_version"] == SCHEMA_VERSION and data["tool"]["name"] == "cbn-inspect"
    assert data["order_confidence"] == "high"


def test_report_source_sha256_is_the_file_hash(cli, planted_path):
    data = cli.json(planted_path)
    assert data["source"]["sha256"] == hashlib.sha256(planted_path.read_bytes()).hexdigest()


def test_progress_only_on_a_terminal_and_not_when_quiet():
    from cbn_inspect.cli._progress import LayerProgress, progress_wanted

    piped = Console(file=io.StringIO(), force_terminal=False)
    tty = Console(file=io.StringIO(), force_terminal=True, width=80)
    assert not progress_wanted(piped) and progress_wanted(tty) and not progress_wanted(tty, enabled=False)
    with LayerProgress(tty, delay=0.0) as progress:
        for i in range(3):
            progress(i + 1, 3, f"layer{i}")
    assert "analysing" in tty.file.getvalue()
    quick = Console(file=io.StringIO(), force_terminal=True, width=80)
    with LayerProgress(quick) as progress:  # done within the delay: nothing drawn
        progress(1, 1, "only")
    assert quick.file.getvalue() == ""
    with LayerProgress(piped, delay=0.0) as progress:
        assert progress is None


def test_report_progress_callback_sees_every_layer(planted_path):
    seen = []
    report = inspect_source(planted_path, progress=lambda done, total, name: seen.append((done, total)))
    assert seen == [(i + 1, len(report.layers)) for i in range(len(report.layers))]
