"""The counts route (analysis/counts.py, issue 20): exact counts by LDL^T inertia, the certified largest value,
the tie rule, and the bottleneck call, against the full route on the same layers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from cbn_inspect.analysis import analyze_layer, plan_kernel, resolve_grid
from cbn_inspect.analysis.counts import compute_counts, inertia, positive_counts
from cbn_inspect.records import ConvLayer, InMemoryWeight, Settings, ToleranceRule

THRESHOLDS = (1e-1, 1e-2, 1e-3)


# ---------------------------------------------------------------- inertia


def _hermitian(rng, n, values):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    return (q * values) @ q.conj().T


def test_positive_counts_match_eigenvalues_with_2x2_blocks():
    rng = np.random.default_rng(0)
    mats = np.stack([_hermitian(rng, 24, rng.standard_normal(24) * 10.0 ** rng.uniform(-3, 1, 24))
                     for _ in range(40)])
    ld, pivots, info = torch.linalg.ldl_factor_ex(torch.from_numpy(mats), hermitian=True)
    assert (pivots.numpy() < 0).any(), "the test needs 2x2 pivot blocks"
    expected = (np.linalg.eigvalsh(mats) > 0).sum(axis=1)
    assert (positive_counts(ld.numpy(), pivots.numpy()) == expected).all()


@pytest.mark.parametrize("scipy_path", [True, False])
def test_inertia_counts_and_flags_values_on_the_shift(monkeypatch, scipy_path):
    from cbn_inspect.analysis import counts

    if not scipy_path:
        monkeypatch.setattr(counts, "_scipy_lapack", lambda: None)
    rng = np.random.default_rng(1)
    values = np.array([4.0, 2.0, 1.0, 1.0, 0.5, 0.25, 0.0, 0.0])
    mats = torch.from_numpy(np.stack([_hermitian(rng, 8, values) for _ in range(3)]))
    got, tie = inertia(mats, 0.75, 1e-12)
    assert list(got) == [4, 4, 4] and not tie.any()
    got, tie = inertia(mats, 1.0, 1e-12)  # two values exactly on the shift (within round-off)
    assert tie.all()
    got, tie = inertia(mats, 1.0 + 1e-3, 1e-12)  # near, but far outside the band
    assert list(got) == [2, 2, 2] and not tie.any()


# ---------------------------------------------------------------- planted spectra


def _planted_kernel(grid, channels, spectrum, seed=0):
    """A full-size circular kernel (C, C, *grid) whose W_hat(m) has singular values ``spectrum(m)``."""
    rng = np.random.default_rng(seed)
    n1, n2 = grid
    hat = np.zeros((n1, n2, channels, channels), dtype=complex)
    for a in range(n1):
        for b in range(n2):
            mirror = ((-a) % n1, (-b) % n2)
            if mirror < (a, b):
                hat[a, b] = hat[mirror].conj()
                continue
            s = np.asarray(spectrum((a, b)), dtype=float)
            if mirror == (a, b):  # self-conjugate: a real matrix
                u, _ = np.linalg.qr(rng.standard_normal((channels, channels)))
                v, _ = np.linalg.qr(rng.standard_normal((channels, channels)))
            else:
                u, _ = np.linalg.qr(rng.standard_normal((channels, channels)) + 1j * rng.standard_normal((channels, channels)))
                v, _ = np.linalg.qr(rng.standard_normal((channels, channels)) + 1j * rng.standard_normal((channels, channels)))
            hat[a, b] = (u * s) @ v.conj().T
    # W_hat(m) = sum_x W[x] exp(-2 pi i <m, x/N>): W = ifft over the grid
    kernel = np.fft.ifft2(hat, axes=(0, 1)).real
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(2, 3, 0, 1)))


def _layer(weight: torch.Tensor, grid) -> ConvLayer:
    return ConvLayer(name="planted", shape=tuple(weight.shape), dtype="float64", weight=InMemoryWeight(weight),
                     grid=tuple(grid), grid_source="metadata", padding_mode="circular", geometry_source="metadata")


def _spectra(grid, channels):
    def clustered(m):  # half of every frequency's values on the threshold 0.1 * 2, within round-off
        base = np.linspace(0.3, 1.0, channels)
        base[: channels // 2] = 0.2 * (1.0 + np.linspace(-1, 1, channels // 2) * 1e-13)
        return base * (2.0 if m == (0, 0) else 1.0)

    def ties(m):  # exact ties: the same values everywhere, one of them exactly 0.1 * the largest
        return np.array([1.0, 1.0, 0.5, 0.1, 0.1, 0.01, 0.01, 0.001] * (channels // 8))

    def deficient(m):  # rank-deficient Gram matrices: half the values exactly zero
        vals = np.zeros(channels)
        vals[: channels // 2] = np.linspace(0.05, 1.0, channels // 2) * (1 + sum(m))
        return vals

    def single(m):  # the largest value at a single frequency (and its mirror)
        return np.linspace(1e-4, 1.0, channels) * (50.0 if m == (1, 2) else 1.0)

    return {"clustered": clustered, "ties": ties, "deficient": deficient, "single": single}


def _compare(layer, weight, settings):
    full = analyze_layer(layer, weight, settings, route="full")
    counts = analyze_layer(layer, weight, settings, route="counts")
    a, b = full.metrics, counts.metrics
    assert counts.route in ("counts", "full") and full.route == "full"
    assert b.mode_count == a.mode_count
    assert b.degree_counts == a.degree_counts and b.pair_degree_counts == a.pair_degree_counts
    assert b.kept_frequencies == a.kept_frequencies
    assert b.spectral_norm == a.spectral_norm and b.threshold == a.threshold
    assert b.stable_rank == pytest.approx(a.stable_rank, rel=1e-6)
    for metric in a.energy_by_degree:
        for degree, share in a.energy_by_degree[metric].items():
            assert b.energy_by_degree[metric][degree] == pytest.approx(share, rel=1e-6, abs=1e-12)
    return counts


@pytest.mark.parametrize("case", ["clustered", "ties", "deficient", "single"])
@pytest.mark.parametrize("tol", THRESHOLDS)
def test_adversarial_spectra_counts_equal_full_route(case, tol):
    grid, channels = (6, 6), 16
    weight = _planted_kernel(grid, channels, _spectra(grid, channels)[case], seed=3)
    report = _compare(_layer(weight, grid), weight, Settings(tolerance=ToleranceRule("relative", tol)))
    assert report.route == "counts"


@pytest.mark.parametrize("tol", [0.5, 0.05])
def test_absolute_rule_and_mixed_eigensolver_layer(tol):
    """128 channels: the full route probes the layer and may take the mixed (complex64 + float64) solver."""
    grid, channels = (3, 3), 128
    weight = _planted_kernel(grid, channels, lambda m: np.linspace(0.0, 1.0 + 0.1 * sum(m), channels) ** 3, seed=4)
    report = _compare(_layer(weight, grid), weight, Settings(tolerance=ToleranceRule("absolute", tol)))
    assert report.route == "counts"


def test_unserved_layers_fall_back_to_the_full_route():
    weight = torch.randn(8, 8, 1, 1, dtype=torch.float64)  # one tap: one solve serves all frequencies
    layer = _layer(weight, (4, 4))
    assert analyze_layer(layer, weight, Settings(), route="counts").route == "full"
    zero = torch.zeros(8, 8, 3, 3, dtype=torch.float64)
    assert analyze_layer(_layer(zero, (4, 4)), zero, Settings(), route="counts").metrics.mode_count == 0
    plan = plan_kernel(torch.randn(8, 8, 3, 3, dtype=torch.float64), (5, 5))
    with pytest.raises(ValueError):
        compute_counts(plan, ToleranceRule("gap", 10.0))


def test_route_selection_follows_the_request():
    from cbn_inspect.analysis.layer import counts_route_applies

    auto = Settings(spectrum_route="auto")
    assert not counts_route_applies(Settings())  # the default is the full route
    assert counts_route_applies(auto)
    assert counts_route_applies(dataclasses.replace(auto, tolerance=ToleranceRule("absolute", 0.5)))
    assert not counts_route_applies(dataclasses.replace(auto, keep_spectra=True))
    assert not counts_route_applies(dataclasses.replace(auto, tolerance=ToleranceRule("gap", 10.0)))
    assert not counts_route_applies(dataclasses.replace(auto, tolerance=ToleranceRule("energy", 0.9)))
    assert not counts_route_applies(dataclasses.replace(auto, precision="float64"))
    assert not counts_route_applies(dataclasses.replace(auto, device="cuda"))


# ---------------------------------------------------------------- real models and the bottleneck call


def _model_check(monkeypatch, name: str, size: str | None, thresholds=THRESHOLDS):
    from cbn_inspect.inspect import analyze_model
    from cbn_inspect.loaders import load
    from cbn_inspect.report.json_report import report_to_dict

    monkeypatch.setenv("CBN_COUNTS_MIN_SIDE", "1")  # the call with counts-route layers wherever the route applies
    loaded = load(name, input_size=size)
    for tol in thresholds:
        settings = Settings(tolerance=ToleranceRule("relative", tol), spectrum_route="auto")
        for layer in loaded.layers:
            layer = resolve_grid(layer, settings)
            _compare(layer, layer.weight.load(), settings)
        full = report_to_dict(analyze_model(loaded, dataclasses.replace(settings, spectrum_route="full")))
        auto_report = analyze_model(loaded, settings)
        auto = report_to_dict(auto_report)
        assert auto["bottleneck"] == full["bottleneck"]
        assert any(r.route == "counts" for r in auto_report.layers)
        for a, b in zip(full["layers"], auto["layers"]):
            assert (a["mode_count"], a["degree_counts_by_metric"], a["spectral_norm"]) == \
                   (b["mode_count"], b["degree_counts_by_metric"], b["spectral_norm"])


def test_timm_resnet18_small_input_every_layer(monkeypatch):
    _model_check(monkeypatch, "timm:resnet18", "32", thresholds=(1e-1, 1e-3))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["timm:resnet18", "timm:resnet50", "timm:efficientnet_b0",
                                  "timm:mobilenetv3_small_100"])
def test_timm_models_default_size_every_layer(monkeypatch, name):
    _model_check(monkeypatch, name, None)


def test_bundled_samples_counts_and_call_equal(monkeypatch):
    """Every layer of every sample on the counts route (forced) against the full route, and the call."""
    from pathlib import Path

    from cbn_inspect.inspect import inspect_source
    from cbn_inspect.loaders import load
    from cbn_inspect.report.json_report import report_to_dict

    monkeypatch.setenv("CBN_COUNTS_MIN_FREQUENCIES", "1")
    monkeypatch.setenv("CBN_COUNTS_MIN_SIDE", "1")
    samples = Path(__file__).resolve().parent.parent / "sample_checkpoints"
    for path in sorted(samples.glob("*.safetensors")):
        loaded = load(str(path))
        for tol in THRESHOLDS:
            settings = Settings(tolerance=ToleranceRule("relative", tol), spectrum_route="auto")
            for layer in loaded.layers:
                layer = resolve_grid(layer, settings)
                _compare(layer, layer.weight.load(), settings)
            auto = report_to_dict(inspect_source(str(path), settings))
            full = report_to_dict(inspect_source(str(path), dataclasses.replace(settings, spectrum_route="full")))
            assert auto["bottleneck"] == full["bottleneck"], path.name


def test_lazy_bottleneck_call_equals_the_eager_one():
    """Random count profiles with random gaps: the call with every layer 'counts only' (gaps only bounded, as
    the counts route bounds them; completed on demand) equals the call on complete metrics, and completes only
    the layers it needs: fewer the tighter the bounds, none where they are tight and no end layer's gap at
    another layer's count is read (the counts route does not know those)."""
    from cbn_inspect.analysis import locate_bottleneck
    from cbn_inspect.records import LayerMetrics

    rng = np.random.default_rng(5)
    completed = {"tight": 0, "loose": 0, "open": 0}
    for trial in range(600):
        k = int(rng.integers(4, 14))
        mode = ("tight", "loose", "open")[trial % 3]
        full, stripped = [], []
        for i in range(k):
            capacity = int(rng.choice([64, 100, 400]))
            count = min(int(rng.choice([4, 5, 6, 20, 40, 60, 1000]) * rng.uniform(0.9, 1.1)), capacity)
            gap = float(10 ** rng.uniform(0, 3)) if count < capacity else None
            leading = np.sort(rng.uniform(0, 1, capacity))[::-1]
            threshold = 0.1
            if rng.uniform() < 0.2:  # an absolute threshold under the 1e-7 floor: gap_at may fall below 1
                threshold, leading = 1e-9, np.sort(10 ** rng.uniform(-8.5, 0, capacity))[::-1]
            full.append(LayerMetrics(
                mode_count=count, capacity=capacity, threshold=threshold, spectral_norm=1.0, stable_rank=1.0,
                effective_rank=1.0, smallest_kept=0.5, largest_discarded=None if gap is None else 0.5 / gap,
                gap_ratio=gap, degree_counts={"l1": {0: count}, "linf": {0: count}},
                pair_degree_counts={"l1": {}, "linf": {}}, energy_by_degree={"l1": {}, "linf": {}},
                kept_frequencies=(), grid=(8, 8), leading=tuple(float(v) for v in leading)))
            bounds = None
            if gap is not None:
                bounds = {"tight": (gap, gap), "loose": (gap / rng.uniform(1, 3), gap * rng.uniform(1, 3)),
                          "open": (min(1.0, threshold / 1e-7), math.inf)}[mode]
            stripped.append(dataclasses.replace(full[-1], gap_ratio=None, smallest_kept=None, largest_discarded=None,
                                                leading=(), effective_rank=None, gap_bounds=bounds))
        names = [f"layer{i}" for i in range(k)]
        settings = Settings(max_utilisation=float(rng.choice([0.05, 0.5, 1.0])))
        done = []
        eager = locate_bottleneck(names, full, settings)
        lazy = locate_bottleneck(names, stripped, settings, counts_only=range(k),
                                 full_metrics=lambda i: done.append(i) or full[i])
        assert lazy == eager, trial
        assert len(done) == len(set(done))
        completed[mode] += len(done)
        if mode == "tight" and len({m.mode_count for m in full}) == 1:
            assert not done, trial  # no gap at another layer's count is read: tight bounds decide everything
    assert completed["tight"] < min(completed["loose"], completed["open"]), completed


def test_lazy_call_reads_no_gap_at_a_counts_layer_that_keeps_everything():
    """An end layer on the counts route that keeps every value (absolute threshold under the 1e-7 floor) has
    no gap, but the full route's gap at the run's lower count can be below 1 (its values under the floor):
    here 0.3, so the full route trims it. The lazy call must not take that gap for 1."""
    from cbn_inspect.analysis import locate_bottleneck
    from cbn_inspect.records import LayerMetrics

    def metrics(count, capacity, gap, leading, threshold=0.1):
        return LayerMetrics(
            mode_count=count, capacity=capacity, threshold=threshold, spectral_norm=1.0, stable_rank=1.0,
            effective_rank=1.0, smallest_kept=None, largest_discarded=None, gap_ratio=gap,
            degree_counts={"l1": {0: count}, "linf": {0: count}}, pair_degree_counts={"l1": {}, "linf": {}},
            energy_by_degree={"l1": {}, "linf": {}}, kept_frequencies=(), grid=(8, 8), leading=leading)

    known = metrics(10, 100, 5.0, tuple(np.linspace(1.0, 0.5, 100)))
    end = metrics(11, 11, None, (1.0,) * 9 + (3e-8, 2e-8), threshold=1e-9)
    assert end.gap_at(10) == pytest.approx(0.3)
    full = [known, known, known, known, end, known]  # the first and last are the edge layers
    stripped = list(full)
    stripped[4] = dataclasses.replace(end, leading=())
    names = [f"layer{i}" for i in range(len(full))]
    settings = Settings(max_utilisation=1.0)
    eager = locate_bottleneck(names, full, settings)
    assert eager.trimmed and eager.trimmed[0][0] == 4
    done = []
    lazy = locate_bottleneck(names, stripped, settings, counts_only=[4], full_metrics=lambda i: done.append(i) or full[i])
    assert lazy == eager and done == [4]


def test_counts_route_gap_bounds_hold_on_real_layers():
    """The counts route's gap bounds bracket the full route's gap ratio on every layer of the samples and of
    a timm model, at each threshold; a layer that keeps every value or none has no bounds (its gap is known)."""
    from pathlib import Path

    from cbn_inspect.loaders import load

    samples = Path(__file__).resolve().parent.parent / "sample_checkpoints"
    sources = [str(p) for p in sorted(samples.glob("*.safetensors"))] + ["timm:resnet18"]
    bounded = 0
    for source in sources:
        loaded = load(source, input_size="32") if source.startswith("timm:") else load(source)
        for tol in THRESHOLDS:
            settings = Settings(tolerance=ToleranceRule("relative", tol), spectrum_route="auto")
            for layer in loaded.layers:
                layer = resolve_grid(layer, settings)
                weight = layer.weight.load()
                counted = analyze_layer(layer, weight, settings, route="counts")
                if counted.route != "counts":
                    continue
                m, f = counted.metrics, analyze_layer(layer, weight, settings, route="full").metrics
                if f.gap_ratio is None:
                    assert m.gap_bounds is None, layer.name
                    continue
                low, high = m.gap_bounds
                assert low <= f.gap_ratio <= high, (source, layer.name, tol, m.gap_bounds, f.gap_ratio)
                bounded += 1
    assert bounded > 20


def test_counts_route_json_carries_the_gap_bounds(monkeypatch):
    """--counts-route JSON: a counts-route layer with kept and discarded values has gap_ratio null and
    gap_ratio_bounds around the full route's gap ratio; the report validates against the schema."""
    from pathlib import Path

    from cbn_inspect.inspect import inspect_source
    from cbn_inspect.report.json_report import report_to_dict, validate_report

    monkeypatch.setenv("CBN_COUNTS_MIN_FREQUENCIES", "1")
    monkeypatch.setenv("CBN_COUNTS_MIN_SIDE", "1")
    seen = 0
    for name in ("digits_cnn", "cbn_demo"):  # cbn_demo's call completes its layers: no bounds are left there
        path = str(Path(__file__).resolve().parent.parent / "sample_checkpoints" / f"{name}.safetensors")
        auto = report_to_dict(inspect_source(path, Settings(spectrum_route="auto")))
        full = report_to_dict(inspect_source(path, Settings()))
        validate_report(auto)
        assert auto["bottleneck"] == full["bottleneck"]
        for a, f in zip(auto["layers"], full["layers"]):
            if a["route"] == "counts" and f["gap_ratio"] is not None:
                low, high = a["gap_ratio_bounds"]
                assert a["gap_ratio"] is None and low <= f["gap_ratio"] and (high is None or f["gap_ratio"] <= high)
                seen += 1
            else:
                assert "gap_ratio_bounds" not in a
    assert seen


# ---------------------------------------------------------------- acceptance 3: audit rows with either route


def _audit_rows(tmp_path, sources, *extra):
    from cbn_inspect.batch import run_audit
    from cbn_inspect.batch.summary import flatten_row
    from cbn_inspect.records import Settings

    settings = Settings(spectrum_route="full" if "--exact-values" in extra else "auto")
    rows = run_audit(list(sources), settings, out=tmp_path / f"rows{len(extra)}.jsonl", jobs=1)
    return [flatten_row(r) for r in rows.rows]


def _same_rows(auto, full):
    assert len(auto) == len(full)
    for a, b in zip(auto, full):
        for key in ("route", "seconds", "wall_seconds", "key"):
            a.pop(key), b.pop(key)
        assert a == b


def test_audit_rows_of_the_samples_equal_with_either_route(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("CBN_COUNTS_MIN_FREQUENCIES", "1")  # the samples' small grids: use the route everywhere
    monkeypatch.setenv("CBN_COUNTS_MIN_SIDE", "1")
    samples = sorted(str(p) for p in (Path(__file__).resolve().parent.parent / "sample_checkpoints").glob("*.safetensors"))
    auto, full = _audit_rows(tmp_path, samples), _audit_rows(tmp_path, samples, "--exact-values")
    assert "counts" in {r["route"] for r in auto} and {r["route"] for r in full} == {"full"}
    _same_rows(auto, full)


@pytest.mark.slow
def test_audit_rows_of_timm_models_equal_with_either_route(tmp_path):
    sources = ["timm:resnet18", "timm:efficientnet_b0", "timm:mobilenetv3_small_100"]
    _same_rows(_audit_rows(tmp_path, sources), _audit_rows(tmp_path, sources, "--exact-values"))


# ---------------------------------------------------------------- --device cuda: where the solves run


def test_cuda_solve_split_by_size(monkeypatch):
    from cbn_inspect.analysis.spectrum import CUDA_BATCHED_MAX_N, _hermitian_values, solve_device

    assert solve_device(512, "cpu") == "cpu"
    assert solve_device(CUDA_BATCHED_MAX_N, "cuda") == "cuda"  # one batched syevj call
    assert solve_device(64, "cuda") == "cpu" and solve_device(256, "cuda") == "cpu"
    assert solve_device(512, "cuda") == "cuda"
    monkeypatch.setenv("CBN_CUDA_CPU_MAX_N", "0")
    assert solve_device(64, "cuda") == "cuda"
    # the CPU side of the split is the plain route: the same values as the CPU path
    rng = np.random.default_rng(6)
    a = rng.standard_normal((3, 1, 40, 60)) + 1j * rng.standard_normal((3, 1, 40, 60))
    gram = torch.from_numpy(a @ a.conj().transpose(0, 1, 3, 2))
    expected = np.sort(np.sqrt(np.clip(np.linalg.eigvalsh(gram.numpy()), 0, None)).reshape(3, -1), axis=1)[:, ::-1]
    assert np.allclose(_hermitian_values(gram, "plain"), expected, rtol=1e-10)
