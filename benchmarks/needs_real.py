"""``needs`` on real third-party networks: the report, the joint check on held-out inputs, whether the advice
holds, and what it cost.

Give the ONNX files as arguments (fetched with ``pip download --no-deps``, never committed), e.g. the three
PP-OCR networks of ``rapidocr-onnxruntime`` (text detector, text recogniser, direction classifier)::

    pip download --no-deps -d /tmp/rapidocr rapidocr-onnxruntime==1.4.4
    (cd /tmp/rapidocr && python -m zipfile -e rapidocr_onnxruntime-1.4.4-py3-none-any.whl .)
    M=/tmp/rapidocr/rapidocr_onnxruntime/models
    PYTHONPATH=. python benchmarks/needs_real.py $M/ch_PP-OCRv4_det_infer.onnx $M/ch_PP-OCRv4_rec_infer.onnx \\
        $M/ch_ppocr_mobile_v2.0_cls_infer.onnx --out /tmp/needs_real

Each model runs twice: on ``samples`` (the photographs bundled with scikit-learn and scikit-image, fed whole)
and on a folder of ``--folder-count`` seeded crops of those and other bundled photographs and text scans,
written at run time into a temporary folder (``benchmarks/_photos.py``). The PP-OCR networks were trained on
OpenCV's BGR order, so their folder is written with red and blue swapped (``samples`` are fed as RGB, as the
tool reads them). Input size and normalisation per model come from the presets below (rapidocr's own config:
mean = std = 0.5; detector at ``--det-size``), or ``--input-size``/``--mean``/``--std`` for other files.

Written into ``--out``: per run a figure (``<model>.<inputs>.png``), the HTML section, the JSON section when the
needs JSON reporter is present, and one ``summary.json`` / ``summary.md`` over all runs: per probed layer the
needed band, degree and rank (with the profile's rank and the degree type), the safe down-sampling factor and its
held-out change; the joint checks on held-out inputs and whether they hold; forward passes, CPU and wall
seconds, against one plain forward pass over the same inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# file-name fragment -> (what it is, input size, mean, std): rapidocr-onnxruntime 1.4.4's config.yaml
PRESETS = {
    "_det_": ("text detector (PP-OCRv4 det, DB head, dense probability map)", None, (0.5,), (0.5,)),
    "_rec_": ("text recogniser (PP-OCRv4 rec, SVTR-LCNet, CTC over 6625 symbols)", (3, 48, 320), (0.5,), (0.5,)),
    "_cls_": ("text direction classifier (PP-OCR mobile v2.0 cls, 0 / 180 degrees)", (3, 48, 192), (0.5,), (0.5,)),
}


def preset(path: Path, args: argparse.Namespace) -> tuple[str, Any, Any, Any, bool]:
    """(description, input size, mean, std, bgr) for one model file."""
    for key, (what, size, mean, std) in PRESETS.items():
        if key in path.name:
            if size is None:
                size = (3, args.det_size, args.det_size)
            return what, size, mean, std, True
    if args.input_size is None:
        raise SystemExit(f"{path.name}: no preset; pass --input-size (and --mean/--std)")
    return path.name, args.input_size, args.mean, args.std, False


def plain_forward(path: Path, batches: list[Any]) -> tuple[float, float]:
    """CPU and wall seconds of the unmodified ONNX model over ``batches`` (onnxruntime, same session options)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: batches[0]})  # warm-up, not timed
    cpu, wall = time.process_time(), time.perf_counter()
    for x in batches:
        session.run(None, {name: x})
    return time.process_time() - cpu, time.perf_counter() - wall


def input_batches(spec: str, size, mean, std, batch: int) -> list[Any]:
    """The inputs exactly as ``needs`` feeds them (its own reader and preprocessing), as numpy batches."""
    from cbn_inspect.activations.inputs import ModelInput, open_inputs, resolve_preprocessing
    from cbn_inspect.records import ActivationSettings

    settings = ActivationSettings(spec, input_size=tuple(size), mean=tuple(mean) if mean else None,
                                  std=tuple(std) if std else None)
    prep = resolve_preprocessing(ModelInput(channels=size[0], spatial=None), settings)
    return [b.numpy() for b in open_inputs(spec, prep, settings).batches(batch)]


def layer_rows(report: Any) -> list[dict[str, Any]]:
    rows = []
    for layer in report.layers:
        safe = layer.safe_change
        rows.append({
            "layer": layer.name, "grid": list(layer.grid), "channels": layer.channels, "reason": layer.reason,
            "needed_band": layer.needed_band, "needed_degree": layer.needed_degree, "needed_rank": layer.needed_rank,
            "needed_rank_type": {str(k): v for k, v in sorted(layer.needed_rank_type.items())},
            "profile_rank": layer.profile_rank, "directions": layer.directions, "safe_factor": layer.safe_factor,
            "safe_change_held_out": None if safe is None else safe.relative_l2,
            "safe_holds": None if safe is None else safe.holds,
            "sanity_full": layer.sanity_full.relative_l2, "sanity_zero": layer.sanity_zero.relative_l2,
            "rings_that_matter": [[r.low, r.high] for r in layer.rings if not r.change.holds],
            "rings": len(layer.rings),
            "monotone": {k: getattr(layer, k).monotone for k in ("box", "ball", "rank")},
            "notes": list(layer.notes),
        })
    return rows


def change_dict(change: Any) -> dict[str, Any] | None:
    if change is None:
        return None
    return {"relative_l2": change.relative_l2, "inputs": change.inputs, "part": change.part, "holds": change.holds,
            "top1_agreement": change.top1_agreement, "kl": change.kl, "argmax_agreement": change.argmax_agreement}


def run_one(path: Path, label: str, spec: str, size, mean, std, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from cbn_inspect.interventions.run import needs

    started = time.strftime("%H:%M:%S")
    print(f"\n== {path.name} on {label} ({spec}), input {'x'.join(map(str, size))}, started {started} UTC",
          flush=True)
    last = [0.0]

    def progress(done: int, total: int, what: str) -> None:
        now = time.perf_counter()
        if now - last[0] > 30:
            print(f"   {done}/{total} passes: {what}", flush=True)
            last[0] = now

    report = needs(str(path), spec, input_size="x".join(map(str, size)), mean=tuple(mean) if mean else None,
                   std=tuple(std) if std else None, batch_size=args.batch_size, max_change=args.max_change,
                   max_forward_passes=args.max_forward_passes, max_rings=args.max_rings, layers=args.layers,
                   max_memory_mb=args.max_memory,
                   progress=progress)
    batches = input_batches(spec, size, mean, std, args.batch_size)
    plain_cpu, plain_wall = plain_forward(path, batches)
    stem = f"{path.stem}.{label}"
    report.plot(out / f"{stem}.png")
    (out / f"{stem}.html").write_text(report.to_html())
    try:
        from cbn_inspect.report.needs_json import needs_to_dict

        (out / f"{stem}.json").write_text(json.dumps(needs_to_dict(report), indent=1))
    except Exception as exc:  # the JSON is a by-product: the summary below must still be written
        print(f"   (JSON not written: {type(exc).__name__}: {exc})", flush=True)
    joint = [{"kind": j.kind, "cuts": [list(c) for c in j.cuts], "change": change_dict(j.change)} for j in report.joint]
    held = [j["change"]["holds"] for j in joint if j["change"] is not None]
    row = {
        "model": path.name, "inputs": label, "spec": spec, "input_size": list(size), "runner": report.runner,
        "max_rings": args.max_rings, "layers_flag": args.layers, "max_memory_mb": args.max_memory,
        "output": dict(report.output), "count": report.inputs.get("count"),
        "split": {"rule": report.split.rule, "decide": report.split.decide, "held_out": report.split.held_out},
        "layers": layer_rows(report), "joint": joint,
        "advice_holds": (all(held) if held else None),
        "needed_directions": list(report.needed_directions), "everything_needed": report.everything_needed,
        "summary": list(report.summary), "notes": list(report.notes),
        "cost": {"forward_passes": report.cost.forward_passes, "estimated": report.cost.estimated,
                 "input_evaluations": report.cost.input_evaluations, "cpu_s": report.cost.cpu_seconds,
                 "wall_s": report.cost.wall_seconds, "plain_forward_cpu_s": plain_cpu,
                 "plain_forward_wall_s": plain_wall,
                 "cpu_ratio": report.cost.cpu_seconds / plain_cpu if plain_cpu > 0 else None,
                 "wall_ratio": report.cost.wall_seconds / plain_wall if plain_wall > 0 else None},
    }
    print(markdown([row]), flush=True)
    return row


def _f(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if pct:
        return f"{value:.2%}" if value >= 1e-4 else f"{value:.1e}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        c = r["cost"]
        out.append(f"### {r['model']} on {r['inputs']} ({r['count']} inputs: {r['split']['decide']} decide, "
                   f"{r['split']['held_out']} held out; input {'x'.join(map(str, r['input_size']))}; output "
                   f"{r['output'].get('kind')} {r['output'].get('shapes', r['output'].get('shape'))})\n")
        out.append("| layer | C x grid | probe | band (ν/νN) | degree | needed rank / profile / all | type | safe ↓ | "
                   "held-out change | rings that matter alone |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for l in r["layers"]:
            typ = ", ".join(f"{v} @ deg {k}" for k, v in l["needed_rank_type"].items())
            if len(typ) > 60:
                typ = typ[:57] + "..."
            rings = f"{len(l['rings_that_matter'])} of {l.get('rings', '?')}"
            out.append(f"| {l['layer']} | {l['channels']}x{'x'.join(map(str, l['grid']))} | {l['reason']} | "
                       f"{_f(l['needed_band'])} | {_f(l['needed_degree'])} | {_f(l['needed_rank'])} / "
                       f"{l['profile_rank']} / {l['directions']} | {typ or '–'} | {l['safe_factor']}x | "
                       f"{_f(l['safe_change_held_out'], True)} | {rings} |")
        out.append("")
        for j in r["joint"]:
            ch = j["change"]
            if ch is None:
                out.append(f"- joint {j['kind']}: no cut to check")
                continue
            extra = "".join(f", {k} {_f(ch[k])}" for k in ("top1_agreement", "kl", "argmax_agreement") if ch[k] is not None)
            out.append(f"- joint {j['kind']} ({len(j['cuts'])} cuts): change {_f(ch['relative_l2'], True)}{extra} on "
                       f"{ch['inputs']} held-out inputs: {'holds' if ch['holds'] else 'does NOT hold'}")
        out.append(f"- advice holds: {r['advice_holds']}; needs {r['needed_directions'][0]:,} of "
                   f"{r['needed_directions'][1]:,} directions; everything needed: {r['everything_needed']}")
        out.append(f"- cost: {c['forward_passes']} forward passes (estimated {c['estimated']}), CPU {c['cpu_s']:.1f} s, "
                   f"wall {c['wall_s']:.1f} s; plain forward over the same inputs CPU {c['plain_forward_cpu_s']:.2f} s, "
                   f"wall {c['plain_forward_wall_s']:.2f} s: {_f(c['cpu_ratio'])}x CPU, {_f(c['wall_ratio'])}x wall")
        for s in r["summary"]:
            out.append(f"  - {s}")
        out.append("")
    return "\n".join(out)


def compact(rows: list[dict[str, Any]]) -> str:
    """One line per run (the README's table): probes, needed bands, safe factors, ranks, joint checks, cost."""
    out = ["| network (file) | inputs (decide / held out) | probes | needed band (ν/νN), min-max | safe ↓ > 1 at | "
           "needed rank / all directions (profile) | joint check, held-out | advice holds | cost: passes, CPU (x plain) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        layers = r["layers"]
        bands = [l["needed_band"] for l in layers if l["needed_band"] is not None]
        safe = [f"{l['layer']} {l['safe_factor']}x ({_f(l['safe_change_held_out'], True)})" for l in layers
                if l["safe_factor"] > 1]
        needed = sum(l["needed_rank"] if l["needed_rank"] is not None else l["directions"] for l in layers)
        total = sum(l["directions"] for l in layers)
        profile = sum(l["profile_rank"] for l in layers)
        joint = []
        for j in r["joint"]:
            ch = j["change"]
            if ch is None:
                joint.append(f"{j['kind']}: no cut")
                continue
            top1 = f", top-1 {ch['top1_agreement']:.1%}" if ch.get("top1_agreement") is not None else ""
            joint.append(f"{j['kind']} ({len(j['cuts'])}): {_f(ch['relative_l2'], True)}{top1} "
                         f"{'holds' if ch['holds'] else 'fails'}")
        c = r["cost"]
        out.append(f"| {r['model']} {'x'.join(map(str, r['input_size']))} | {r['inputs']} ({r['split']['decide']} / "
                   f"{r['split']['held_out']}) | {len(layers)} | "
                   f"{(_f(min(bands)) + '-' + _f(max(bands))) if bands else '–'} | {'; '.join(safe) or 'none'} | "
                   f"{needed:,} / {total:,} ({profile:,}) | {'; '.join(joint) or '–'} | {r['advice_holds']} | "
                   f"{c['forward_passes']}, {c['cpu_s']:.0f} s ({_f(c['cpu_ratio'])}x) |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--table", nargs="+", type=Path, help="print the README table of these summary.json files")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "needs_real")
    parser.add_argument("--inputs", nargs="+", default=["samples", "folder"], choices=["samples", "folder"])
    parser.add_argument("--folder-count", type=int, default=24)
    parser.add_argument("--det-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-change", type=float, default=0.05)
    parser.add_argument("--max-forward-passes", type=int, default=None)
    parser.add_argument("--max-rings", type=int, default=32, help="band-stop rings per probe (needs' --max-rings)")
    parser.add_argument("--max-memory", type=int, default=1500, help="MB for cached inputs and prefixes (needs' --max-memory)")
    parser.add_argument("--layers", default=None, help="probe only the conv layers matching this regex")
    parser.add_argument("--input-size", type=lambda s: tuple(int(v) for v in s.split("x")), default=None)
    parser.add_argument("--mean", type=float, nargs="+", default=None)
    parser.add_argument("--std", type=float, nargs="+", default=None)
    args = parser.parse_args(argv)
    if args.table:
        print(compact([row for path in args.table for row in json.loads(path.read_text())]))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} (a shared VM: CPU time is the figure to trust)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="needs_photos_") as tmp:
        from _photos import write_photo_folder

        folders = {}
        for path in args.models:
            what, size, mean, std, bgr = preset(path, args)
            print(f"\n# {path.name}: {what}")
            for label in args.inputs:
                spec = "samples"
                if label == "folder":
                    if bgr not in folders:
                        folders[bgr] = Path(tmp) / ("bgr" if bgr else "rgb")
                        write_photo_folder(folders[bgr], args.folder_count, seed=0, bgr=bgr)
                    spec = str(folders[bgr])
                rows.append(run_one(path, label, spec, size, mean, std, args, args.out))
                (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
                (args.out / "summary.md").write_text(markdown(rows))
    print(f"\nwritten: {args.out}/summary.md, summary.json, a figure and an HTML page per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
