"""The bottleneck call against side layers, fuzzy edge layers, wrapped kernels and structural zeros (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from cbn_inspect import Settings, inspect_source
from cbn_inspect.analysis import locate_bottleneck
from cbn_inspect.analysis._path import name_hints_side, side_layers
from cbn_inspect.records import LayerEvidence, LayerMetrics
from cbn_inspect.report import report_to_dict, validate_report
from cbn_inspect.synthetic import planted_network

from conftest import DEPTH, PLANTED_GRID, PLANTED_RANGE, PLANTED_RANKS

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"


def _insert(state: dict, meta: dict, name: str, weight: np.ndarray, grid: tuple[int, ...], after: str) -> None:
    """Add a conv layer to a safetensors state dict + cbn_inspect metadata, right after ``after`` in the order."""
    layers, order = json.loads(meta["cbn_inspect.layers"]), json.loads(meta["cbn_inspect.order"])
    d = len(grid)
    spec = {"grid": list(grid), "stride": [1] * d, "padding_mode": "circular"}
    if "dilation" in next(iter(layers.values())):  # the samples declare the full geometry
        spec.update(dilation=[1] * d, groups=1, transposed=False)
    layers[name] = spec
    order.insert(order.index(after) + 1, name)
    state[f"{name}.weight"] = weight.astype(np.float32)
    meta["cbn_inspect.layers"], meta["cbn_inspect.order"] = json.dumps(layers), json.dumps(order)


def _with_side_layers(state: dict, meta: dict, grid: tuple[int, ...], channels: int, se_after: str,
                      head_after: str, seed: int = 7) -> None:
    """A random SE-style pair of 1x1 convs (C -> C/4 -> C on the pooled 1x1 grid) and a C_out = 1 side head."""
    rng = np.random.default_rng(seed)
    d, squeeze = len(grid), max(1, channels // 4)
    one = (1,) * d
    _insert(state, meta, f"{se_after}.se.fc1", rng.standard_normal((squeeze, channels) + one), one, se_after)
    _insert(state, meta, f"{se_after}.se.fc2", rng.standard_normal((channels, squeeze) + one), one,
            f"{se_after}.se.fc1")
    _insert(state, meta, "aux_head", rng.standard_normal((1, channels) + (3,) * d), grid, head_after)


def _planted():
    return planted_network(grid=PLANTED_GRID, channels=8, depth=DEPTH, planted=PLANTED_RANGE,
                           ranks=PLANTED_RANKS, seed=1)


# Acceptance 1: side layers do not hide the main run.

def test_planted_bottleneck_survives_an_se_pair_and_a_side_head(tmp_path):
    state, meta = _planted()
    _with_side_layers(state, meta, PLANTED_GRID, 8, se_after="layers.5", head_after="layers.7")
    path = tmp_path / "se.safetensors"
    save_file(state, str(path), metadata=meta)
    report = inspect_source(path)
    names = [r.layer.name for r in report.layers]
    b = report.bottleneck
    assert b.found and b.clean and b.strength_label == "strong", b.reason
    assert (b.start, b.end) == ("layers.3", "layers.8")
    assert b.rank == 8 and dict(b.degree_counts) == {0: 3, 1: 4, 2: 1} and b.consistent_type
    assert b.plateau_length == 6
    assert [names[i] for i in b.members] == [f"layers.{i}" for i in range(3, 9)]
    side = {names[i]: why for i, why in b.side_layers}
    assert set(side) == {"layers.5.se.fc1", "layers.5.se.fc2", "aux_head"}
    assert "1x1 grid" in side["layers.5.se.fc1"] and "channel chain" in side["aux_head"]
    data = report_to_dict(report)
    validate_report(data)
    assert [s["name"] for s in data["bottleneck"]["side_layers"]] == ["layers.5.se.fc1", "layers.5.se.fc2",
                                                                       "aux_head"]


def test_trained_sample_survives_an_se_pair_and_a_side_head(tmp_path):
    """cbn_demo_1d (trained with weight decay) with random side layers inserted in the middle of its run."""
    with safe_open(str(SAMPLES / "cbn_demo_1d.safetensors"), "np") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    _with_side_layers(state, meta, (64,), 8, se_after="layers.4", head_after="layers.7")
    path = tmp_path / "demo_se.safetensors"
    save_file(state, str(path), metadata=meta)
    b = inspect_source(path).bottleneck
    assert b.found and b.clean and b.strength_label == "strong", b.reason
    assert (b.start, b.end) == ("layers.1", "layers.10") and b.plateau_length == 10
    assert b.rank == 7 and dict(b.degree_counts) == {0: 1, 1: 2, 2: 2, 3: 2}
    assert len(b.side_layers) == 3


def test_se_pair_on_the_full_grid_is_side_by_name_and_capacity(tmp_path):
    """An SE-like pair analysed on the layers' own grid (no pooled grid declared): capacity 1/4 of its
    neighbours plus an `se` name make it a side layer; the name alone would not."""
    state, meta = _planted()
    rng = np.random.default_rng(3)
    _insert(state, meta, "layers.5.se.fc1", rng.standard_normal((2, 8, 1, 1)), PLANTED_GRID, "layers.5")
    _insert(state, meta, "layers.5.se.fc2", rng.standard_normal((8, 2, 1, 1)), PLANTED_GRID, "layers.5.se.fc1")
    path = tmp_path / "se_full.safetensors"
    save_file(state, str(path), metadata=meta)
    b = inspect_source(path).bottleneck
    assert b.found and b.strength_label == "strong" and (b.start, b.end, b.rank) == ("layers.3", "layers.8", 8)
    assert all("side-branch name" in why for _, why in b.side_layers) and len(b.side_layers) == 2


def _metrics(count, capacity=512, gap=100.0, grid=(8, 8), degrees=None):
    degrees = degrees or {0: count}
    return LayerMetrics(mode_count=count, capacity=capacity, threshold=0.1, spectral_norm=1.0, stable_rank=1.0,
                        effective_rank=1.0, smallest_kept=1.0, largest_discarded=1 / gap, gap_ratio=gap,
                        degree_counts={"l1": degrees, "linf": degrees}, pair_degree_counts={"l1": degrees},
                        energy_by_degree={"l1": {}}, kept_frequencies=(), grid=grid)


def test_a_full_low_count_layer_does_not_hijack_the_call():
    """The old failure: a 2-mode layer at 100% of a tiny capacity was the 'lowest count' and hid the run."""
    metrics = ([_metrics(300)] + [_metrics(9)] * 4 + [_metrics(2, capacity=2, gap=1.0, grid=(1, 1))]
               + [_metrics(9)] * 4 + [_metrics(300)])
    names = [f"l{i}" for i in range(len(metrics))]
    b = locate_bottleneck(names, metrics, Settings())
    assert b.found and (b.start_index, b.end_index, b.rank, b.plateau_length) == (1, 9, 9, 8)
    assert b.side_layers == ((5, "on a 1x1 grid (pooled features: no spatial frequencies)"),)
    assert 5 not in b.members


def test_channel_chain_without_grids():
    """A C_out = 1 layer whose output feeds nothing of the chain is off the main path (channels only)."""
    metrics = [_metrics(300)] + [_metrics(9)] * 3 + [_metrics(1, capacity=64)] + [_metrics(9)] * 3 + [_metrics(300)]
    ev = [LayerEvidence(in_channels=8, out_channels=8) for _ in metrics]
    ev[4] = LayerEvidence(in_channels=8, out_channels=1)
    names = [f"l{i}" for i in range(len(metrics))]
    assert locate_bottleneck(names, metrics, Settings()).plateau_length == 3  # counts alone: the head splits the run
    b = locate_bottleneck(names, metrics, Settings(), layers=ev)
    assert b.found and (b.start_index, b.end_index, b.plateau_length) == (1, 7, 6)


def test_side_rules_are_conservative():
    assert name_hints_side("blocks.3.se.conv_reduce") and name_hints_side("attn_gate")
    assert name_hints_side("conv_head") and not name_hints_side("layers.5")
    assert not name_hints_side("seq.0") and not name_hints_side("headless")
    # a name alone never makes a layer side; an entry layer with one input channel is narrow by nature
    metrics = [_metrics(9, capacity=64)] + [_metrics(9)] * 4 + [_metrics(9, capacity=64)]
    assert side_layers(["stem", "se.a", "b", "c", "d", "out"], metrics) == {}


def test_every_candidate_run_is_considered():
    """The lowest counts form a run with no split; a clean run higher up is the better-supported bottleneck."""
    metrics = ([_metrics(300)] + [_metrics(5, gap=1.2)] * 3 + [_metrics(300, gap=1.0)] + [_metrics(20, gap=300)] * 4
               + [_metrics(300)])
    b = locate_bottleneck([f"l{i}" for i in range(len(metrics))], metrics, Settings())
    assert b.found and (b.start_index, b.end_index, b.rank) == (5, 8, 20) and b.strength_label == "strong"
    assert b.rejected["rank"] == 5 and "1.2x" in b.rejected["reason"]


def test_a_step_on_the_way_down_is_not_a_candidate():
    metrics = [_metrics(300)] + [_metrics(50)] * 3 + [_metrics(20, gap=1.5)] * 3 + [_metrics(300)]
    b = locate_bottleneck([f"l{i}" for i in range(len(metrics))], metrics, Settings())
    assert not b.found and b.rejected["rank"] == 20


# Acceptance 2: the run's edges follow the evidence.

def _fuzzy_exit(state: dict, name: str, grid: tuple[int, ...], values: tuple[float, float]) -> None:
    """Add two weaker directions (singular values ``values``) at frequency (1, 1) to a planted layer."""
    w = state[name].astype(np.float64)
    rng = np.random.default_rng(11)
    u = np.linalg.qr(rng.standard_normal((w.shape[0], 2)) + 1j * rng.standard_normal((w.shape[0], 2)))[0]
    v = np.linalg.qr(rng.standard_normal((w.shape[1], 2)) + 1j * rng.standard_normal((w.shape[1], 2)))[0]
    mat = (u * np.asarray(values)) @ v.conj().T
    spectrum = np.zeros(w.shape[:2] + grid, dtype=np.complex128)
    spectrum[:, :, 1, 1], spectrum[:, :, grid[0] - 1, grid[1] - 1] = mat, mat.conj()
    state[name] = (w + np.fft.ifftn(spectrum, axes=(2, 3)).real).astype(np.float32)


def test_a_fuzzy_exit_layer_is_trimmed_and_the_run_is_clean(tmp_path):
    state, meta = _planted()
    _fuzzy_exit(state, f"layers.{PLANTED_RANGE[1]}.weight", PLANTED_GRID, (0.2, 0.08))
    path = tmp_path / "fuzzy.safetensors"
    save_file(state, str(path), metadata=meta)
    report = inspect_source(path)
    exit_layer = report.layers[PLANTED_RANGE[1]].metrics
    assert exit_layer.mode_count == 10 and exit_layer.gap_ratio < 3  # within the plateau tolerance, fuzzy
    b = report.bottleneck
    assert b.found and b.clean and b.strength_label == "strong", b.reason
    assert (b.start, b.end, b.rank) == ("layers.3", "layers.7", 8)
    assert [i for i, _ in b.trimmed] == [PLANTED_RANGE[1]] and "exit layer" in b.trimmed[0][1]


def test_edge_trimming_on_counts_alone():
    """The issue's 12-layer case: 11 values at gaps 89-374x, a last layer keeping 13 at a gap of 2.4."""
    gaps = [89, 120, 374, 200, 150, 300, 95, 180, 110]
    metrics = [_metrics(40)] + [_metrics(11, gap=g) for g in gaps] + [_metrics(13, gap=2.4), _metrics(40)]
    b = locate_bottleneck([f"l{i}" for i in range(12)], metrics, Settings())
    assert b.found and b.clean and b.strength_label == "strong"
    assert (b.start_index, b.end_index, b.rank) == (1, 9, 11) and [i for i, _ in b.trimmed] == [10]
    # an end layer only somewhat weaker than the rest stays: the label describes the run it reports
    metrics[10] = _metrics(13, gap=40)
    b = locate_bottleneck([f"l{i}" for i in range(12)], metrics, Settings())
    assert (b.start_index, b.end_index) == (1, 10) and not b.trimmed and b.clean


# Acceptance 3: a grid smaller than the kernel.

def test_grid_smaller_than_the_kernel_warns_and_is_never_strong(tmp_path, cli):
    state, meta = planted_network(grid=(32,), channels=6, depth=8, planted=(2, 5),
                                  ranks={(0,): 1, (2,): 1}, seed=4)
    path = tmp_path / "k32.safetensors"
    save_file(state, str(path))  # no metadata: the user's --grid decides
    data = cli.json(path, "--grid", "16")
    validate_report(data)
    assert any("larger than their grid" in w and "wrapped" in w for w in data["warnings"])
    assert all(not layer["exact"] and "wrapped-kernel" in layer["flags"] for layer in data["layers"])
    b = data["bottleneck"]
    assert b["strength_label"] != "strong" and b["wrapped_layers"]
    assert b["found"] and "wrapped" in b["label_cap"]
    assert any("wrapped" in line for line in b["basis"]["notes"])
    # on its own grid (32) the same file is exact enough for a strong call (padding not declared: approximate)
    fine = cli.json(path, "--grid", "32")["bottleneck"]
    assert fine["found"] and fine["strength_label"] == "strong" and not fine["wrapped_layers"]


# Structural zeros.

def test_strided_1x1_structural_zeros_are_not_capacity_or_gap(tmp_path):
    import torch
    from safetensors.torch import save_file as save_torch

    torch.manual_seed(0)
    layers = {"down": {"grid": [8, 8], "stride": [2, 2], "padding_mode": "circular"}}
    path = tmp_path / "s.safetensors"
    save_torch({"down.weight": torch.randn(16, 8, 1, 1)}, str(path),
               metadata={"cbn_inspect.layers": json.dumps(layers)})
    m = inspect_source(path).layers[0].metrics
    assert m.capacity == 16 * 8  # 4x4 coarse grid, rank at most C_in = 8 (not 16: 3 of 4 phases are empty)
    assert m.utilisation > 0.9 and (m.gap_ratio is None or m.gap_ratio < 100)


# JSON numbers.

def test_json_precision_follows_the_requested_precision(planted_path):
    r32 = report_to_dict(inspect_source(planted_path))
    r64 = report_to_dict(inspect_source(planted_path, Settings(precision="float64")))
    assert r32["number_format"]["significant_digits"] == 7 and r64["number_format"]["significant_digits"] is None
    validate_report(r32), validate_report(r64)
    v32, v64 = r32["layers"][4]["spectral_norm"], r64["layers"][4]["spectral_norm"]
    assert len(f"{v32:.17g}".rstrip("0")) <= 9 and v64 == pytest.approx(v32, rel=1e-6)
    report = inspect_source(planted_path, Settings(precision="float64"))
    assert v64 == report.layers[4].metrics.spectral_norm  # full precision, not rounded


# Acceptance 4: random initialisation is never a bottleneck, side layers or not.

RANDOM_TIMM = ["resnet18", "efficientnet_b0", "mobilenetv3_small_100"]


def _random_timm_is_no_bottleneck(name: str, size: str) -> None:
    report = inspect_source(f"timm:{name}", input_size=size)
    b = report.bottleneck
    assert not b.found and b.strength_label == "none", (name, b.reason)
    assert b.rejected is not None and b.rejected["reason"] == b.reason
    assert not any("larger than their grid" in w for w in report.warnings)  # the input keeps kernels within grids
    if name != "resnet18":  # SE blocks on the pooled grid, judged off the main path
        names = [report.layers[i].layer.name for i, _ in b.side_layers]
        assert names and all(".se." in n or n == "conv_head" for n in names)  # mobilenetv3: head after pooling
    else:  # the shortcut projections, traced after their block
        assert [report.layers[i].layer.name for i, _ in b.side_layers] == [
            "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    validate_report(report_to_dict(report))


@pytest.mark.parametrize("name, size", [("resnet18", "128"), ("efficientnet_b0", "160"),
                                        ("mobilenetv3_small_100", "160")])
def test_random_timm_models_are_no_bottleneck(name, size):
    """At the smallest input where every stage's grid is at least its kernel (3x3 at stride 32 for resnet18,
    5x5 for the others): seconds each; 224 runs with -m slow."""
    _random_timm_is_no_bottleneck(name, size)


@pytest.mark.slow
@pytest.mark.parametrize("name", RANDOM_TIMM)
def test_random_timm_models_are_no_bottleneck_at_224(name):
    _random_timm_is_no_bottleneck(name, "224")


# The top of the report.

def _render(report) -> str:
    import io

    from rich.console import Console

    from cbn_inspect.report import TerminalReport

    console = Console(file=io.StringIO(), width=240, color_system=None)  # no wrapping inside a line
    console.print(TerminalReport(report))
    return console.file.getvalue()


def test_summary_says_what_the_call_rests_on(tmp_path):
    state, meta = _planted()
    _with_side_layers(state, meta, PLANTED_GRID, 8, se_after="layers.5", head_after="layers.7")
    _fuzzy_exit(state, "layers.8.weight", PLANTED_GRID, (0.2, 0.08))
    declared = tmp_path / "declared.safetensors"
    save_file(state, str(declared), metadata=meta)
    text = _render(inspect_source(declared))
    assert "order: metadata; grid from metadata; 15/15 spectra exact" in text
    assert "off the main path" in text and "2 on a 1x1 grid, 1 off the channel chain" in text
    assert "left out of the run: layers.8, exit layer" in text
    assert "only guessed" not in text
    guessed = tmp_path / "guessed.safetensors"
    save_file(state, str(guessed))  # no metadata: order only recovered from channel counts, grids by default
    report = inspect_source(guessed)
    text = _render(report)
    assert report.order_source == "shapes" and report.order_confidence == "low"
    assert "order: shapes" in text and "order only guessed" in text
    basis = report_to_dict(report)["bottleneck"]["basis"]
    assert basis["order_guessed"] and basis["grid_sources"] == {"default": 15} and basis["exact_layers"] == 0
    assert any("guess" in note for note in basis["notes"])


@pytest.mark.parametrize("taps, stride, dilation, bound", [
    ((1, 1), (2, 2), (1, 1), 2),     # strided 1x1: one of 4 phases, rank <= C_in = 2
    ((3, 3), (2, 2), (2, 2), 2),     # taps at even offsets only: still one phase
    ((3, 3), (2, 2), (1, 1), None),  # every phase filled: no structural zeros
    ((2,), (4,), (1,), 4),           # 2 of 4 phases: rank <= 2 * C_in = 4
])
def test_structural_rank_bound_from_geometry(taps, stride, dilation, bound):
    import torch

    from cbn_inspect.analysis.counting import count_modes
    from cbn_inspect.analysis.geometry import plan_kernel
    from cbn_inspect.analysis.spectrum import compute_spectrum
    from cbn_inspect.records import ToleranceRule

    torch.manual_seed(1)
    weight = torch.randn((8, 2) + taps, dtype=torch.float64)
    plan = plan_kernel(weight, (8,) * len(taps), stride=stride, dilation=dilation)
    assert plan.rank_bound == bound
    spectrum = compute_spectrum(plan, precision="float64")
    width = spectrum.values.shape[1] if bound is None else bound
    assert np.all(spectrum.values[:, width:] == 0)  # what lies past the bound is exactly zero
    assert count_modes(spectrum, ToleranceRule()).capacity == int(spectrum.multiplicity.sum()) * width
