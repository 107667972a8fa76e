"""Cost of ``cbn_inspect.Monitor``: time per analysis of a live module, against ``inspect_source`` of the same
weights saved as a checkpoint, measured in the same run (CPU time of the process, all threads, and wall time;
medians over ``--repeats``).

Models: ``timm:resnet18`` (random weights, pretrained=False) traced at ``--input-size`` (default 224), and the
bundled demo ``sample_checkpoints/cbn_demo.safetensors`` loaded into a live module of 12 full-size circular
convs (16x16). The reference file is the module's ``state_dict`` saved as safetensors with
``Monitor.checkpoint_metadata()`` (grids and order), so both sides analyse the same layers on the same grids;
the script asserts that their numbers agree. Also printed: the cost of a ``step()`` that does not analyse,
of writing the checkpoint the reference reads (which the Monitor never does), and how long the training
loop waits per analysis with ``background=True`` (only for the copy of the weights).

    PYTHONPATH=. python benchmarks/bench_monitor.py                 # resnet18 at 224, 3 repeats
    PYTHONPATH=. python benchmarks/bench_monitor.py --input-size 64 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "sample_checkpoints" / "cbn_demo.safetensors"


def timed(call: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Median CPU seconds (process, all threads) and median wall seconds of ``call``; its last result."""
    cpu, wall, result = [], [], None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        result = call()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall), result


def demo_module():
    """cbn_demo's 12 layers as a live module: each conv pads (0, n-1) circularly itself, so the trace sees
    the 16x16 grid; its stored weight is the saved cross-correlation kernel."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from torch import nn

    class FullCircularConv(nn.Conv2d):
        def forward(self, x):
            n = self.kernel_size[0]
            return F.conv2d(F.pad(x, (0, n - 1, 0, n - 1), mode="circular"), self.weight)

    class Demo(nn.Module):
        def __init__(self, weights):
            super().__init__()
            self.layers = nn.ModuleList(
                FullCircularConv(w.shape[1], w.shape[0], w.shape[-1], bias=False, padding_mode="circular")
                for w in weights)

        def forward(self, x):
            for i, layer in enumerate(self.layers):
                x = layer(x)
                x = torch.relu(x) if i < len(self.layers) - 1 else x
            return x

    state = load_file(str(DEMO))
    model = Demo([state[f"layers.{i}.weight"] for i in range(12)])
    model.load_state_dict(state)
    return model, 16


def resnet18(size: int):
    import timm

    return timm.create_model("resnet18", pretrained=False), size


def same_numbers(a: dict, b: dict) -> bool:
    keys = ("mode_count", "spectral_norm", "gap_ratio", "degree_counts", "grid")
    return ([{k: layer[k] for k in keys} for layer in a["layers"]] ==
            [{k: layer[k] for k in keys} for layer in b["layers"]]
            and a["bottleneck"]["rank"] == b["bottleneck"]["rank"])


def bench(label: str, model, size: int, repeats: int, tmp: Path) -> None:
    from safetensors.torch import save_file

    from cbn_inspect import Monitor, Settings, inspect_source
    from cbn_inspect.report.json_report import report_to_dict

    settings = Settings()
    c0, w0 = time.process_time(), time.perf_counter()
    monitor = Monitor(model, every=1_000_000, settings=settings, input_size=size)
    trace_cpu, trace_wall = time.process_time() - c0, time.perf_counter() - w0
    path = tmp / f"{label}.safetensors"

    def save() -> None:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
                 if v.dtype.is_floating_point}
        save_file(state, str(path), metadata=monitor.checkpoint_metadata())

    save_cpu, save_wall, _ = timed(save, 1)
    # interleave the two sides, so that the shared machine's load hits both alike
    mon_cpu, mon_wall, ref_cpu, ref_wall = [], [], [], []
    live = ref = None
    for _ in range(repeats):
        c, w, live = timed(lambda: monitor.analyse(0), 1)
        mon_cpu.append(c), mon_wall.append(w)
        c, w, ref = timed(lambda: report_to_dict(inspect_source(path, settings)), 1)
        ref_cpu.append(c), ref_wall.append(w)
    assert same_numbers(live, ref), f"{label}: the Monitor and the saved checkpoint disagree"
    idle_cpu, idle_wall, _ = timed(lambda: [monitor.step() for _ in range(1000)], 1)
    waits = []
    with Monitor(model, every=1_000_000, settings=settings, input_size=size, background=True) as background:
        for _ in range(repeats):
            _, wall, future = timed(lambda: background.analyse(0), 1)
            waits.append(wall)
            assert same_numbers(future.result(), ref)
    m_cpu, m_wall = statistics.median(mon_cpu), statistics.median(mon_wall)
    r_cpu, r_wall = statistics.median(ref_cpu), statistics.median(ref_wall)
    layers = len(live["layers"])
    from cbn_inspect.analysis._threads import analysis_threads

    print(f"{label} ({layers} conv layers, input {size}, {analysis_threads()} analysis threads):")
    print(f"  Monitor.analyse      CPU {m_cpu:7.3f} s   wall {m_wall:7.3f} s   (median of {repeats})")
    print(f"  inspect_source(file) CPU {r_cpu:7.3f} s   wall {r_wall:7.3f} s   (median of {repeats})")
    print(f"  ratio Monitor / file: CPU {m_cpu / r_cpu:.2f}x, wall {m_wall / r_wall:.2f}x; numbers identical")
    print(f"  once: trace at Monitor(...) CPU {trace_cpu:.3f} s wall {trace_wall:.3f} s; "
          f"saving the file CPU {save_cpu:.3f} s wall {save_wall:.3f} s")
    print(f"  step() that does not analyse: {idle_wall / 1000 * 1e6:.1f} us wall")
    print(f"  background=True: the loop waits {statistics.median(waits) * 1000:.1f} ms wall per analysis "
          f"(the copy; median of {repeats}); the analysis then runs beside it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=224, help="resnet18's traced input size (default 224)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-resnet", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs visible; load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="cbn-bench-monitor-") as tmp:
        model, size = demo_module()
        bench("cbn_demo", model, size, args.repeats, Path(tmp))
        if not args.skip_resnet:
            model, size = resnet18(args.input_size)
            bench("timm:resnet18", model, size, args.repeats, Path(tmp))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
