"""``needs``: which frequencies and directions each probed feature map must carry, measured by running the model.

The steps (THEORY.md, "What a network needs: interventions"):

1. open the source's runner (:func:`cbn_inspect.activations.open_runner`) and its inputs; split the inputs
   (every k-th held out, the rest decide) and keep them in memory when they fit the memory bound, else
   re-read them for every pass (memory then stays flat in the number of inputs);
2. a recording pass finds where each conv layer's input comes from; a reference pass over the decide inputs
   stores the unmodified outputs and accumulates the per-frequency Gram matrices (the activation profile:
   its mode counts, its bottleneck and the directions of the rank truncation);
3. choose the probes (where the grid changes and the profile's bottleneck; ``--layers``, ``--all-layers``),
   estimate the forward passes and refuse past ``max_forward_passes``;
4. per probe: the sanity pair (full band, frequency 0 alone), the box and l1-ball searches, the ring
   band-stops, the rank search, all on the decide inputs; the chosen bands and the down-sampling advice
   measured on the held-out inputs;
5. the joint checks (all recommended down-samplings at once; all needed ranks at once) on held-out inputs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import numpy as np
import torch

from ..analysis import interventions as iv
from ..analysis import locate_bottleneck
from ..errors import CbnError, NothingToAnalyseError, ResourceLimitError, UsageError
from ..records import ActivationSettings, Settings
from .records import (FULL_BAND_LIMIT, InputSplit, JointCheck, LayerNeeds, NeedCurve, NeedsCost, NeedsReport,
                      NeedsSettings, RingImportance)
from .session import Bank, Progress, Session, mask_edit
from .summary import summarise


def validate(settings: NeedsSettings) -> None:
    """Tolerances and bounds out of range: one :class:`UsageError` before any work."""
    if not (isinstance(settings.max_change, (int, float)) and math.isfinite(settings.max_change)
            and settings.max_change > 0):
        raise UsageError(f"--max-change {settings.max_change}: must be a number > 0 (a relative L2 change, "
                         "e.g. 0.05)")
    if not (isinstance(settings.min_agreement, (int, float)) and 0 <= settings.min_agreement <= 1):
        raise UsageError(f"--min-agreement {settings.min_agreement}: must be in [0, 1]")
    if settings.held_out_every < 2:
        raise UsageError("--held-out-every must be >= 2 (every k-th input is held out)")
    if settings.max_rings < 1:
        raise UsageError("--max-rings must be >= 1")
    if settings.max_forward_passes is not None and settings.max_forward_passes < 1:
        raise UsageError("--max-forward-passes must be >= 1")
    if settings.degree_metric not in ("l1", "linf"):
        raise UsageError(f"degree metric {settings.degree_metric!r}: use l1 or linf")
    if settings.layer_filter:
        try:
            re.compile(settings.layer_filter)
        except re.error as exc:
            raise UsageError(f"--layers {settings.layer_filter!r} is not a valid regular expression: {exc}") from exc


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------

def _open(source: Any, *, trust_code: bool, key: str | None, arch: str | None, input_size: Any, device: str):
    from ..activations import open_runner
    from ..errors import NotExecutableError

    if arch is None:
        try:
            return open_runner(source, None, side="input", device=device, trust_code=trust_code, key=key)
        except NotExecutableError:
            pass
    from ..loaders import load

    loaded = load(source, trust_code=trust_code, key=key, arch=arch, input_size=input_size)
    return open_runner(source, loaded, side="input", device=device, trust_code=trust_code, key=key)


def _driver(runner: Any, cache_bytes: int) -> Any:
    if runner.kind == "onnxruntime":
        from .onnx_driver import OnnxDriver

        return OnnxDriver(runner, cache_bytes=cache_bytes)
    from .torch_driver import TorchDriver

    return TorchDriver(runner)


def _shapes(driver: Any) -> dict[str, tuple[int, ...]]:
    if driver.kind == "onnxruntime":
        return dict(driver.shapes)
    return {name: site.shape for name, site in driver.sites.items()}


DEFAULT_BUDGET_MB = 2048  # without --max-memory: caches and Gram matrices within 2 GB (a shared machine's share)


def _budget(settings: NeedsSettings) -> int:
    from ..loaders._policy import default_max_memory_mb

    mb = settings.max_memory_mb or min(DEFAULT_BUDGET_MB, default_max_memory_mb())
    return int(mb) << 20


def _gram_bytes(shape: tuple[int, ...]) -> int:
    c, grid = shape[0], shape[1:]
    return int(np.prod(iv.half_shape(grid))) * c * c * 16


def _choose(order: list[str], aliases: dict[str, str], shapes: dict[str, tuple[int, ...]], settings: NeedsSettings,
            bottleneck_layers: list[str]) -> list[tuple[str, str]]:
    """(site, reason) in execution order."""
    if settings.all_layers:
        return [(name, "all-layers") for name in order]
    if settings.layer_filter:
        pattern = re.compile(settings.layer_filter)
        readers: dict[str, list[str]] = {name: [name] for name in order}
        for alias, target in aliases.items():
            readers[target].append(alias)
        return [(name, "layers") for name in order if any(pattern.search(n) for n in readers[name])]
    chosen: dict[str, str] = {}
    previous = None
    for name in order:
        grid = shapes[name][1:]
        if all(n == 1 for n in grid):
            continue  # a 1x1 map (squeeze-excitation, pooled heads) has no frequency to cut, and is no stage
        if grid != previous:
            chosen[name] = "grid-change"
        previous = grid
    for name in bottleneck_layers:
        site = aliases.get(name, name)
        if site in shapes and not all(n == 1 for n in shapes[site][1:]):
            chosen.setdefault(site, "bottleneck")
    return [(name, chosen[name]) for name in order if name in chosen]


def _estimate(shapes: dict[str, tuple[int, ...]], probes: list[str], settings: NeedsSettings, decide: int,
              held: int) -> int:
    total = 0
    for name in probes:
        shape = shapes[name]
        grid = shape[1:]
        levels = len(iv.box_levels(grid))
        top = iv.max_degree(grid, settings.degree_metric)
        units = int(np.prod(iv.half_shape(grid))) * shape[0]
        per = (2 + 1 + math.ceil(math.log2(max(levels, 2))) + int(math.log2(max(min(grid), 2)))
               + math.ceil(math.log2(top + 2)) + len(iv.ring_groups(top, settings.max_rings))
               + 2 + math.ceil(math.log2(units + 2)))
        total += per * decide + 4 * held
    return total + 2 * held + held  # the two joint checks and the held-out references


def needs(source: Any, inputs: str | ActivationSettings = "noise", *, settings: NeedsSettings | None = None,
          analysis: Settings | None = None, trust_code: bool = False, key: str | None = None, arch: str | None = None,
          input_size: Any = None, progress: Progress | None = None, **options: Any) -> NeedsReport:
    """Measure what each probed feature map of ``source`` must carry; return the :class:`NeedsReport`.

    ``source``: a path, ``timm:NAME`` or an ``nn.Module``; ``inputs``: an INPUTS spec (``noise``, ``samples``,
    a folder, a tensor file) or :class:`ActivationSettings`. Keyword ``options`` are :class:`NeedsSettings`
    fields (``max_change``, ``min_agreement``, ``layer_filter`` (or ``layers``), ``all_layers``,
    ``max_forward_passes``, ...) and the :class:`ActivationSettings` fields ``batch_size``, ``max_inputs``,
    ``seed``, ``mean``, ``std``, ``interpolation``, ``device``. ``analysis``: the tolerance rule of the profile.
    ``progress(done, total, what)`` is called after every forward pass.
    """
    from ..loaders import parse_input_size

    started, cpu_started = time.perf_counter(), time.process_time()
    analysis = analysis or Settings()
    settings = _settings(inputs, settings, input_size, options)
    validate(settings)
    act = settings.activations
    runner = _open(source, trust_code=trust_code, key=key, arch=arch,
                   input_size=input_size if not isinstance(input_size, tuple) else "x".join(map(str, input_size)),
                   device=act.device)
    if act.input_size is None and input_size is not None:
        act = dataclasses.replace(act, input_size=parse_input_size(input_size))
        settings = dataclasses.replace(settings, activations=act)
    from ..activations.inputs import open_inputs, resolve_preprocessing

    prep = resolve_preprocessing(runner.model_input, act)
    batch_size = runner.model_input.fixed_batch or act.batch_size
    budget = _budget(settings)
    bank = Bank(lambda: open_inputs(act.inputs, prep, act), batch_size, settings.held_out_every, budget // 4)
    if bank.counts["decide"] == 0 or bank.counts["held-out"] == 0:
        raise UsageError(f"--activations {act.inputs}: {sum(bank.counts.values())} input(s); needs needs at least "
                         "2 (one to decide, one held out)", hint="give more inputs (--max-inputs, a larger folder)")
    driver = _driver(runner, budget // 4)
    with _threads():
        return _measure(source, runner, driver, bank, settings, analysis, progress, started, cpu_started)


def _settings(inputs: Any, settings: NeedsSettings | None, input_size: Any, options: dict) -> NeedsSettings:
    if settings is not None:
        if options:
            raise TypeError("pass either settings= or keyword options, not both")
        return settings
    act_fields = {f.name for f in dataclasses.fields(ActivationSettings)} - {"inputs", "side", "center"}
    need_fields = {f.name for f in dataclasses.fields(NeedsSettings)} - {"activations"}
    if "layers" in options:
        options["layer_filter"] = options.pop("layers")
    unknown = sorted(set(options) - act_fields - need_fields)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(act_fields | need_fields))}")
    if isinstance(inputs, ActivationSettings):
        act = dataclasses.replace(inputs, **{k: v for k, v in options.items() if k in act_fields})
    else:
        act = ActivationSettings(inputs=str(inputs), **{k: v for k, v in options.items() if k in act_fields})
    act = dataclasses.replace(act, side="input", center=False)
    return NeedsSettings(activations=act, **{k: v for k, v in options.items() if k in need_fields})


class _threads:
    def __enter__(self):
        from ..analysis._threads import analysis_threads

        self.before = torch.get_num_threads()
        torch.set_num_threads(analysis_threads())

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _measure(source, runner, driver, bank: Bank, settings: NeedsSettings, analysis: Settings,
             progress: Progress | None, started: float, cpu_started: float) -> NeedsReport:
    from ..activations._plan import LayerShape
    from ..activations.profile import _Collector, _decompose, _finish

    first = next(bank.batches("decide"))[1]
    try:
        driver.record(first)
    except CbnError:
        raise
    except Exception as exc:  # the model's own failure on these inputs
        text = " ".join(str(exc).split())[:200]
        raise UsageError(f"running the model on inputs of shape {tuple(first.shape)} failed "
                         f"({type(exc).__name__}: {text})", hint="check --input-size for this model") from exc
    if not driver.order:
        raise NothingToAnalyseError("no conv layer's input could be located in the running model")
    shapes = _shapes(driver)
    budget = _budget(settings)
    # the profile of every conv input (for the bottleneck probes) when its Gram matrices fit, else the probes'
    notes: list[str] = list(runner.notes)
    grid_probes = _choose(driver.order, driver.aliases, shapes, dataclasses.replace(settings), [])
    whole = sum(_gram_bytes(shapes[n]) for n in driver.order)
    profile_all = not settings.all_layers and not settings.layer_filter and whole <= budget // 3
    if not profile_all and not settings.all_layers and not settings.layer_filter:
        notes.append(f"the activation profile of every layer would take {whole >> 20} MB of Gram matrices: "
                     "bottleneck layers not probed (only where the grid changes)")
    wanted = set(driver.order) if profile_all else {n for n, _ in grid_probes}
    if sum(_gram_bytes(shapes[n]) for n in wanted) > budget // 2:
        raise ResourceLimitError(f"the probed layers' Gram matrices need "
                                 f"{sum(_gram_bytes(shapes[n]) for n in wanted) >> 20} MB, more than the memory "
                                 "bound allows", hint="probe fewer layers (--layers) or raise --max-memory")
    # one accumulator per tensor: a layer reading the very tensor of an earlier one (an alias) shares its Gram sum
    read = {driver.aliases.get(n, n) for n in wanted}
    targets = [n for n in driver.order if n in read]
    aliases = {a: t for a, t in driver.aliases.items() if a in wanted}
    collector = _Collector(tuple(targets), shapes, aliases, False, settings.activations.device)
    kind = None
    session = Session(driver, bank, settings, "other", progress)
    session.label = "reference pass"
    reference_started = time.perf_counter()
    for key, batch in bank.batches("decide"):
        collector.start_batch()
        out = driver.reference(batch, collector)
        session._tick(len(batch))
        kind = kind or iv.output_kind(out)
        session.keep_ref("decide", key, out)
        output_shape = [list(t.shape[1:]) for t in out]
    if not out:
        raise NothingToAnalyseError("the model's output holds no floating-point tensor to compare")
    session.kind = kind
    plain_seconds = time.perf_counter() - reference_started
    collector.start_batch()
    grams = {name: acc for name, acc in collector.accumulators.items()}
    spectra = _decompose(collector, targets)
    del collector
    profiled = [LayerShape(n, shapes[aliases.get(n, n)], aliases.get(n)) for n in driver.order
                if n in targets or n in aliases]
    layers = _finish(profiled, spectra, analysis, bank.counts["decide"])
    by_name = {layer.name: layer for layer in layers}
    bottleneck_layers: list[str] = []
    if profile_all:
        names = [layer.name for layer in layers]
        call = locate_bottleneck(names, [layer.metrics for layer in layers], analysis)
        if call.found:
            bottleneck_layers = [names[i] for i in (call.members or range(call.start_index, call.end_index + 1))]
    probes = _choose(driver.order, driver.aliases, shapes, settings, bottleneck_layers)
    if not probes:
        what = f" matching --layers {settings.layer_filter!r}" if settings.layer_filter else ""
        raise NothingToAnalyseError(f"no conv layer{what} to probe")
    estimate = session.passes + _estimate(shapes, [n for n, _ in probes], settings, bank.batch_count("decide"),
                                          bank.batch_count("held-out"))
    if settings.max_forward_passes is not None and estimate > settings.max_forward_passes:
        raise ResourceLimitError(f"about {estimate} forward passes needed ({len(probes)} probe(s), "
                                 f"{bank.batch_count('decide')} decide and {bank.batch_count('held-out')} held-out "
                                 f"batch(es)), more than --max-forward-passes {settings.max_forward_passes}",
                                 hint="probe fewer layers (--layers), use fewer inputs or a larger --batch-size")
    session.estimate = estimate
    if progress is not None:
        progress(session.passes, estimate, f"plan: {len(probes)} probe(s), about {estimate} forward passes")
    results = []
    kept: dict[str, Any] = {}  # each probe's directions, for the joint rank check (within the memory bound)
    kept_bytes = 0
    for name, reason in probes:
        session.label = name
        profile = by_name.get(name)
        layer, directions = _probe(session, name, reason, shapes[name], grams[name], profile, driver, settings)
        results.append(layer)
        grams.pop(name, None)
        size = directions.vectors.numel() * directions.vectors.element_size()
        if kept_bytes + size <= budget // 4:
            kept[name] = directions
            kept_bytes += size
        else:
            notes.append(f"{name}: its directions do not fit the memory bound: left out of the joint rank check")
        if hasattr(driver, "forget"):
            driver.forget()
    joint = _joint(session, results, kept, settings)
    summary = summarise(results, joint, settings, kind)
    wall = time.perf_counter() - started
    cost = NeedsCost(forward_passes=session.passes, input_evaluations=session.evaluations, estimated=estimate,
                     cpu_seconds=round(time.process_time() - cpu_started, 3), wall_seconds=round(wall, 3),
                     plain_forward_seconds=round(plain_seconds, 4))
    stream = bank.stream
    inputs = stream.describe() if stream is not None else {}
    inputs["count"] = sum(bank.counts.values())
    inputs["batch_size"] = bank.batch_size
    inputs["kept_in_memory"] = bank.store is not None
    k = settings.held_out_every
    split = InputSplit(rule=f"inputs 1, {1 + k}, {1 + 2 * k}, ... (0-based) held out; the others decide",
                       decide=bank.counts["decide"], held_out=bank.counts["held-out"])
    return NeedsReport(source=str(source) if isinstance(source, (str,)) or hasattr(source, "__fspath__")
                       else f"<{type(source).__name__}>", runner=runner.kind, settings=settings, inputs=inputs,
                       split=split, output={"shapes": output_shape, "kind": kind}, layers=tuple(results),
                       joint=joint, summary=tuple(summary), cost=cost, notes=tuple(notes),
                       tolerance=analysis.tolerance.describe())


def _probe(session: Session, name: str, reason: str, shape: tuple[int, ...], gram, profile, driver,
           settings: NeedsSettings) -> LayerNeeds:
    grid = tuple(int(n) for n in shape[1:])
    metric = settings.degree_metric
    notes: list[str] = []
    levels = iv.box_levels(grid)
    full = session.measure({name: mask_edit(iv.box_mask(grid, levels[-1]))})
    zero = session.measure({name: mask_edit(iv.box_mask(grid, 0.0))})
    if full.relative_l2 > 1e-6:
        notes.append(f"the full band changes the outputs by {full.relative_l2:.2e} (more than float32 round-off)"
                     + ("" if full.relative_l2 <= FULL_BAND_LIMIT else ": this probe's results are not trusted"))
    if zero.holds:
        notes.append("frequency 0 alone keeps the outputs within tolerance: the outputs barely depend on this "
                     "feature map's spatial content")
    # box low-pass, seeded with the bands of 2x, 4x, ... down-sampling
    seeds = []
    s = 2
    while s <= min(grid):
        seeds.append(max(i for i, v in enumerate(levels) if v <= 1.0 / s + 1e-9))
        s *= 2
    box = iv.find_needed(len(levels), lambda i: session.measure({name: mask_edit(iv.box_mask(grid, levels[i]))}),
                         seeds=seeds, known={len(levels) - 1: full, 0: zero})
    top = iv.max_degree(grid, metric)
    degrees = list(range(top + 1))
    ball = iv.find_needed(len(degrees),
                          lambda i: session.measure({name: mask_edit(iv.ball_mask(grid, i, metric))}),
                          known={len(degrees) - 1: full, 0: zero})
    rings = []
    for low, high in iv.ring_groups(top, settings.max_rings):
        mask = iv.ring_mask(grid, low, high, metric)
        rings.append(RingImportance(low, high, iv.complex_count(grid, ~mask),
                                    session.measure({name: mask_edit(mask)})))
    directions = iv.directions_from_gram(gram.gram, grid, metric)
    units = len(directions.units)
    rank = iv.find_needed(units + 1, lambda n: session.measure({name: lambda x, n=n: directions.project(x, n)}))
    needed_band = levels[box.needed] if box.needed is not None else None
    needed_degree = degrees[ball.needed] if ball.needed is not None else None
    needed_units = rank.needed
    rank_values = [directions.rank_of(n) for n in range(units + 1)]
    held = {}
    if needed_band is not None:
        held["box"] = session.measure({name: mask_edit(iv.box_mask(grid, needed_band))}, "held-out")
    if needed_degree is not None:
        held["ball"] = session.measure({name: mask_edit(iv.ball_mask(grid, needed_degree, metric))}, "held-out")
    if needed_units is not None:
        held["rank"] = session.measure({name: lambda x: directions.project(x, needed_units)}, "held-out")
    factor = iv.safe_factor(grid, needed_band)
    safe_change = None
    if factor > 1:
        safe_change = session.measure({name: mask_edit(iv.box_mask(grid, 1.0 / factor))}, "held-out")
        if not safe_change.holds:
            notes.append(f"the {factor}x down-sampling band chosen on the decide inputs does not hold on the held-out "
                         f"inputs (change {safe_change.relative_l2:.3g})")
    if needed_units is not None and needed_units == units and units > 0:
        decide = session.bank.counts["decide"]
        notes.append(f"the rank truncation needed every direction the {decide} decide inputs span ({rank_values[-1]}): "
                     "the needed rank is a lower bound" + (f" (at most {decide} directions per frequency for "
                                                           f"{shape[0]} channels: give more inputs)"
                                                           if decide < shape[0] else ""))
    if factor > 1 and any(n % factor for n in grid if n > 1):
        notes.append(f"a {factor}x down-sampling does not divide every axis of {'x'.join(map(str, grid))}: its band "
                     "1/s is what an ideal anti-alias filter keeps; a strided layer would round the grid up")
    directions.needed_units = needed_units
    metrics = profile.metrics if profile is not None else None
    return LayerNeeds(
        name=name, grid=grid, channels=int(shape[0]), reason=reason,
        box=NeedCurve("box", iv.curve_points(levels, box), needed_band, len(levels), box.search, box.monotone,
                      held.get("box"), box.notes),
        ball=NeedCurve("ball", iv.curve_points(degrees, ball), needed_degree, len(degrees), ball.search,
                       ball.monotone, held.get("ball"), ball.notes),
        rank=NeedCurve("rank", iv.curve_points(rank_values, rank),
                       float(rank_values[needed_units]) if needed_units is not None else None, units + 1, rank.search,
                       rank.monotone, held.get("rank"), rank.notes),
        rings=tuple(rings),
        needed_band=needed_band, needed_degree=needed_degree,
        needed_rank=rank_values[needed_units] if needed_units is not None else None,
        needed_rank_type=directions.type_of(needed_units) if needed_units is not None else {},
        profile_rank=int(metrics.mode_count) if metrics is not None else 0,
        profile_type=dict(metrics.degree_counts.get(metric, {})) if metrics is not None else {},
        directions=int(np.prod(grid)) * int(shape[0]),
        safe_factor=factor, safe_change=safe_change, sanity_full=full, sanity_zero=zero,
        also_read_by=tuple(a for a, t in driver.aliases.items() if t == name), notes=tuple(notes),
    ), directions


def _joint(session: Session, results: list[LayerNeeds], directions: dict[str, Any],
           settings: NeedsSettings) -> tuple[JointCheck, ...]:
    """Every recommended down-sampling at once, and every needed rank at once, on the held-out inputs."""
    session.label = "joint check"
    cuts = [(r.name, r.safe_factor) for r in results if r.safe_factor > 1]
    grids = {r.name: r.grid for r in results}
    change = (session.measure({n: mask_edit(iv.box_mask(grids[n], 1.0 / s)) for n, s in cuts}, "held-out")
              if cuts else None)
    out = [JointCheck("downsampling", tuple(cuts), change)]
    ranks = [(r.name, r.needed_rank) for r in results
             if r.name in directions and r.needed_rank is not None and r.needed_rank < directions[r.name].total]
    edits = {}
    for name, _rank in ranks:
        d = directions[name]
        edits[name] = lambda x, d=d, n=d.needed_units: d.project(x, n)
    change = session.measure(edits, "held-out") if edits else None
    out.append(JointCheck("rank", tuple(ranks), change))
    return tuple(out)
