"""``cbn-inspect needs SOURCE --activations INPUTS``: which frequencies each probed layer needs, by intervention.

The module level stays light (typer and the app only): torch, numpy and the model runners are imported inside
the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import Metric, app, guarded, stderr

EPILOG = """
**Examples**

* `cbn-inspect needs sample_checkpoints/cbn_demo_1d.safetensors --activations noise`: the bundled 1-D demo.
* `cbn-inspect needs timm:resnet18 --activations samples --json needs.json`: a timm architecture on the
  photographs bundled with scikit-learn and scikit-image, JSON to a file too.
* `cbn-inspect needs model.onnx --activations images/ --layers 'stages' --max-change 0.01`: an ONNX model on a
  folder of images, only layers matching the pattern, a stricter tolerance.

An intervention *holds* when the outputs' relative L2 change is at most `--max-change` (default 0.05) and, for a
class output, the top-1 agreement is at least `--min-agreement` (default 0.99). Every k-th input
(`--held-out-every`, default 2) is held out: bands are chosen on the others and reported on these.

Exit codes: 0 ok, 2 usage (a tolerance out of range, inputs the model cannot take, fewer than 2 inputs),
3 unreadable input, 4 no conv layers, 5 unsafe content refused (TorchScript / whole modules need --trust-code),
6 analysis error (an intervention could not be placed), 7 resource limit (--max-forward-passes, --max-memory),
10 an optional extra is missing, 11 no executable architecture, 70 internal error.
"""


def _progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ._progress import progress_wanted

    if quiet:
        return None, None
    said = []

    def plan(done: int, total: int, what: str) -> None:  # the up-front estimate, once, also when piped
        if what.startswith("plan: ") and not said:
            said.append(what)
            stderr.print(f"cbn-inspect: {what[6:]}", style="dim", highlight=False)

    if not progress_wanted(stderr, True):
        return None, plan
    bar = Progress(TextColumn("interventions"), BarColumn(), MofNCompleteColumn(), TextColumn("passes"),
                   TimeElapsedColumn(), TextColumn("{task.fields[what]}", markup=False), console=stderr,
                   transient=True)
    task = bar.add_task("needs", total=None, what="")

    def update(done: int, total: int, what: str) -> None:
        plan(done, total, what)
        bar.update(task, completed=done, total=total, what=what[-40:])

    return bar, update


@app.command("needs", epilog=EPILOG)
@guarded
def needs_command(
    source: Annotated[str, typer.Argument(help="A model the tool can run: timm:NAME, a checkpoint with --arch / config.json / an identified architecture, ONNX, the bundled samples; TorchScript and whole modules with --trust-code.")],
    activations: Annotated[str, typer.Option("--activations", metavar="INPUTS", help="What to feed: `noise`, `samples`, a folder of images, or a tensor file (.npy, .pt, .safetensors).")],
    max_change: Annotated[float, typer.Option("--max-change", help="Largest relative L2 change of the outputs an intervention may cause and still hold.")] = 0.05,
    min_agreement: Annotated[float, typer.Option("--min-agreement", help="Smallest top-1 agreement (class outputs) an intervention must keep to hold.")] = 0.99,
    layers: Annotated[Optional[str], typer.Option("--layers", metavar="REGEX", help="Probe the inputs of the conv layers whose name matches REGEX (default: where the grid changes, plus the activation bottleneck's layers).")] = None,
    all_layers: Annotated[bool, typer.Option("--all-layers", help="Probe the input of every conv layer.")] = False,
    max_forward_passes: Annotated[Optional[int], typer.Option("--max-forward-passes", metavar="N", help="Refuse (exit 7) before starting when the estimated forward passes exceed N.")] = None,
    held_out_every: Annotated[int, typer.Option("--held-out-every", metavar="K", help="Hold out every K-th input for reporting; the others decide.")] = 2,
    max_rings: Annotated[int, typer.Option("--max-rings", metavar="N", help="Band-stop one degree ring at a time up to N rings; more are removed in N equal groups.")] = 32,
    degree: Annotated[Metric, typer.Option("--degree", help="Degree of the ball low-pass and the rings: l1 (sum) or linf (max).")] = Metric.l1,
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="FILE", help="Write the JSON (a `needs` section) to FILE; `-` for stdout.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", metavar="FILE", help="Write the need curves and ring importances to FILE: .png, .svg or .pdf (needs the plot extra).")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="Write a self-contained HTML page (summary, joint checks, sortable layer table, figures, settings) to FILE.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Inputs per forward pass.")] = 32,
    max_inputs: Annotated[Optional[int], typer.Option("--max-inputs", min=1, help="Use at most this many inputs (noise: this many; default 64).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of noise inputs.")] = 0,
    input_size: Annotated[Optional[str], typer.Option("--input-size", metavar="N|HxW|CxHxW", help="Input size (default: the model's config; needed for whole modules and TorchScript).")] = None,
    mean: Annotated[Optional[str], typer.Option("--mean", metavar="M[,M,M]", help="Image normalisation mean (default: the model's config).")] = None,
    std: Annotated[Optional[str], typer.Option("--std", metavar="S[,S,S]", help="Image normalisation std (default: the model's config).")] = None,
    interpolation: Annotated[Optional[str], typer.Option("--interpolation", help="Image resize filter (default: the model's config).")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", metavar="timm:NAME", help="Run the file's weights in this timm architecture.")] = None,
    key: Annotated[Optional[str], typer.Option("--key", help="Entry of a checkpoint dict holding the weights.")] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code", "--trust-pickle", help="Let the file run code (TorchScript programs, whole pickled modules): only for files you trust.")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, or cuda where a GPU is present.")] = "cpu",
    max_memory: Annotated[Optional[int], typer.Option("--max-memory", metavar="MB", min=64, help="Memory bound for cached inputs, outputs, prefixes and Gram matrices (default 2048, or half the physical memory if less); past it inputs are re-read and a probe set whose Gram matrices cannot fit is refused (exit 7).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar on stderr.")] = False,
) -> None:
    """Measure which frequencies and directions each probed feature map needs: filter it, run the model on,
    compare the outputs; advise the down-sampling each layer allows and check it on held-out inputs."""
    import json

    from ..errors import CbnError, UsageError

    from ._needs_outputs import check_outputs, write_outputs

    check_outputs(plot, html)  # before any work: nothing written half-way
    try:
        report = _run(source, activations, max_change, min_agreement, layers, all_layers, max_forward_passes,
                      held_out_every, max_rings, degree.value, batch_size, max_inputs, seed, input_size, mean, std,
                      interpolation, arch, key, trust_code, device, max_memory, quiet)
    except CbnError as error:
        if json_out == "-":
            from ..report.json_report import error_to_dict

            sys.stdout.write(json.dumps(error_to_dict(error), indent=2) + "\n")
        raise
    from ..report.needs_json import needs_to_json

    text = needs_to_json(report)
    write_outputs(report, plot, html)
    if json_out == "-":
        sys.stdout.write(text + "\n")
        return
    from rich.console import Console

    from ..report.needs_terminal import NeedsTerminal

    Console(highlight=False).print(NeedsTerminal(report))
    if json_out:
        from pathlib import Path

        from ..report._text import safe

        try:
            Path(json_out).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--json {json_out}: cannot write ({exc.strerror or exc})") from exc
        stderr.print(safe(f"wrote {json_out}", style="dim"))


def _run(source, inputs, max_change, min_agreement, layers, all_layers, max_forward_passes, held_out_every,
         max_rings, degree, batch_size, max_inputs, seed, input_size, mean, std, interpolation, arch, key,
         trust_code, device, max_memory, quiet):
    from ..activations.inputs import INTERPOLATIONS
    from ..errors import UsageError
    from ..interventions import NeedsSettings, needs
    from ..interventions.run import validate
    from ..records import ActivationSettings
    from ._options import _floats

    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise UsageError(f"--interpolation {interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")
    if device != "cpu":
        import torch

        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise UsageError(f"--device {device}: not available here (use cpu)")
    act = ActivationSettings(inputs=inputs, batch_size=batch_size, max_inputs=max_inputs, seed=seed,
                             mean=_floats("--mean", mean), std=_floats("--std", std), interpolation=interpolation,
                             device=device)
    settings = NeedsSettings(activations=act, max_change=max_change, min_agreement=min_agreement,
                             held_out_every=held_out_every, layer_filter=layers, all_layers=all_layers,
                             max_forward_passes=max_forward_passes, max_rings=max_rings, degree_metric=degree,
                             max_memory_mb=max_memory)
    validate(settings)  # before the model is opened
    bar, update = _progress(quiet)
    if bar is None:
        return needs(source, settings=settings, trust_code=trust_code, key=key, arch=arch, input_size=input_size,
                     progress=update)
    with bar:
        return needs(source, settings=settings, trust_code=trust_code, key=key, arch=arch, input_size=input_size,
                     progress=update)
