"""Options shared by the commands that analyse (``report``, ``audit``), declared once, and their validation.

Each option is an ``Annotated`` alias; a command lists the ones it takes. :func:`build_settings` checks them
before any work starts and turns them into :class:`Settings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .._parse import ACTIVATION_SIDES, INTERPOLATIONS, parse_grid
from ..errors import UsageError
from ._app import Metric, OnnxBranch, Precision, Rule

if TYPE_CHECKING:
    from ..records import ActivationSettings, Settings

DEFAULT_TOLERANCE = {"relative": 0.1, "absolute": 0.1, "gap": 10.0, "energy": 0.99}

SpectraOption = Annotated[bool, typer.Option("--spectra", help="Include every layer's per-frequency singular values in the JSON.")]
ExactValuesOption = Annotated[bool, typer.Option("--exact-values", help="Compute every singular value (the full route, the default); overrides --counts-route.")]
CountsRouteOption = Annotated[bool, typer.Option("--counts-route", help="Where only counts are needed (relative/absolute rule, no --spectra), count values above the threshold by LDL^T inertia instead of computing them all: same counts, largest values and bottleneck call; effective rank, gap and profile null on such layers. Measured slower than the full route on ResNet-50 (README Speed).")]
LayersOption = Annotated[Optional[str], typer.Option("--layers", metavar="REGEX", help="Analyse only layers whose name matches REGEX.")]
GridOption = Annotated[Optional[str], typer.Option("--grid", metavar="N|HxW", help="Input grid of layers whose grid the checkpoint does not declare (default 32 per axis).")]
ToleranceOption = Annotated[Rule, typer.Option("--tolerance", help="Rule that decides which singular values are kept.")]
TolValueOption = Annotated[Optional[float], typer.Option("--tol-value", help="Parameter of the rule: relative 0.1 (of the layer's largest), absolute 0.1, gap 10 (smallest ratio that counts as a gap), energy 0.99.")]
DegreeOption = Annotated[Metric, typer.Option("--degree", help="How frequency degree combines axes: l1 (sum) or linf (max).")]
PrecisionOption = Annotated[Precision, typer.Option("--precision", help="float32: fast, 1e-4 relative on values above 1e-3 of the largest; float64: reference SVDs.")]
FoldBnOption = Annotated[bool, typer.Option("--fold-bn/--no-fold-bn", help="Fold a BatchNorm that follows a conv into it.")]
TrustCodeOption = Annotated[bool, typer.Option("--trust-code", "--trust-pickle", help="Let the file run code: unpickle whole modules and other objects, and execute TorchScript programs (traced grids, --activations). The file's code then runs with your permissions and can read, write and delete files: only for files you trust. --trust-pickle is an alias.")]
KeyOption = Annotated[Optional[str], typer.Option("--key", help="Entry of a checkpoint dict holding the weights, e.g. state_dict_ema.")]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, or cuda where a GPU is present.")]
MinGapOption = Annotated[float, typer.Option("--min-gap", help="Smallest kept / largest discarded value needed inside a bottleneck.")]
ArchOption = Annotated[Optional[str], typer.Option("--arch", metavar="timm:NAME", help="Analyse the file's weights in this timm architecture (grids, strides and order traced; pretrained=False, nothing downloaded).")]
InputSizeOption = Annotated[Optional[str], typer.Option("--input-size", metavar="N|HxW|CxHxW", help="Input size for the trace (default: the model's pretrained_cfg; needed for whole modules and TorchScript).")]
MemoryBudgetOption = Annotated[int, typer.Option("--memory-budget", metavar="MB", min=1, help="Working memory for one layer's per-frequency matrices; big layers are split into chunks of frequencies to fit. Results do not depend on it.")]
MaxMemoryOption = Annotated[Optional[int], typer.Option("--max-memory", metavar="MB", min=64, help="Refuse (exit 7), before allocating, a file whose declared tensors or a layer whose analysis (grid x channels x frequencies) would take this process past MB of memory. Default: half the physical memory.")]
MaxLayersOption = Annotated[int, typer.Option("--max-layers", metavar="N", min=1, help="Refuse (exit 7) a source with more than N conv layers selected.")]
OnnxBranchOption = Annotated[OnnxBranch, typer.Option("--onnx-branch", help="Which body of each ONNX If node to analyse: the two are alternatives, never one chain (the other is named in a note).")]
MaxUtilisationOption = Annotated[float, typer.Option("--max-utilisation", help="Largest share of capacity a bottleneck layer may use.")]


def build_settings(
    grid: str | None,
    tolerance: Rule,
    tol_value: float | None,
    degree: Metric,
    precision: Precision,
    fold_bn: bool,
    layers: str | None,
    spectra: bool,
    device: str,
    min_gap: float,
    max_utilisation: float,
    threads: int | None = None,
    memory_budget: int = 256,
    max_memory: int | None = None,
    max_layers: int = 10_000,
    timeout: float | None = None,
    exact_values: bool = False,
    counts_route: bool = False,
) -> Settings:
    """Validate the analysis options before any work starts, and turn them into :class:`Settings`."""
    parsed_grid = None
    if grid is not None:
        try:
            parsed_grid = parse_grid(grid)
        except ValueError as exc:
            raise UsageError(f"--grid {grid!r}: use N (every axis) or HxW, e.g. 32 or 14x14") from exc
    if layers is not None:
        import re

        try:
            re.compile(layers)
        except re.error as exc:
            raise UsageError(f"--layers {layers!r} is not a valid regular expression: {exc}") from exc
    if timeout is not None and not timeout > 0:
        raise UsageError("--timeout must be > 0 seconds")
    if max_memory is not None and max_memory < memory_budget * 5 // 4 + 64:
        raise UsageError(f"--max-memory {max_memory} MB leaves no room for --memory-budget {memory_budget} MB",
                         hint="give at least 1.25 x the memory budget plus 64 MB")
    value = DEFAULT_TOLERANCE[tolerance.value] if tol_value is None else tol_value
    if tolerance.value in ("relative", "absolute") and value < 0:
        raise UsageError(f"--tol-value must be >= 0 for the {tolerance.value} rule")
    if tolerance.value == "energy" and not 0 < value <= 1:
        raise UsageError("--tol-value must be in (0, 1] for the energy rule")
    if device != "cpu":
        import torch

        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise UsageError(f"--device {device}: not available here (use cpu)")
    from ..records import Settings, ToleranceRule

    return Settings(
        tolerance=ToleranceRule(tolerance.value, float(value)),
        degree_metric=degree.value,
        grid=parsed_grid,
        precision=precision.value,
        fold_batchnorm=fold_bn,
        layer_filter=layers,
        keep_spectra=spectra,
        spectrum_route="auto" if counts_route and not exact_values else "full",
        device=device,
        min_gap=min_gap,
        max_utilisation=max_utilisation,
        threads=threads,
        memory_budget_mb=memory_budget,
        max_memory_mb=max_memory,
        max_layers=max_layers,
        timeout_s=timeout,
    )


# --- activations (--activations INPUTS) ----------------------------------------------------------------------

ActivationsOption = Annotated[Optional[str], typer.Option("--activations", metavar="INPUTS", help="Also run the model and profile every conv layer's feature map: `noise` (seeded Gaussian), `samples` (photographs bundled with scikit-learn and scikit-image), a folder of images, or a tensor file (.npy, .pt, .safetensors). Needs an executable architecture: timm, --arch, ONNX, the bundled samples; TorchScript and whole modules with --trust-code.")]
ActivationSideOption = Annotated[str, typer.Option("--activation-side", metavar="input|output", help="Profile the feature map each conv layer reads (input, default) or writes (output).")]
CenterOption = Annotated[bool, typer.Option("--center", help="Remove the batch mean of each channel at frequency 0 before counting activations.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Inputs per forward pass for --activations.")]
MaxInputsOption = Annotated[Optional[int], typer.Option("--max-inputs", min=1, help="Use at most this many inputs (noise: this many; default 64).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of --activations noise.")]
MeanOption = Annotated[Optional[str], typer.Option("--mean", metavar="M[,M,M]", help="Image normalisation mean (default: the model's config).")]
StdOption = Annotated[Optional[str], typer.Option("--std", metavar="S[,S,S]", help="Image normalisation std (default: the model's config).")]
InterpolationOption = Annotated[Optional[str], typer.Option("--interpolation", help="Image resize filter: nearest, bilinear, bicubic, lanczos, box, hamming (default: the model's config).")]
SkipNonfiniteOption = Annotated[bool, typer.Option("--skip-nonfinite", help="Skip (and count in a note) inputs of a tensor file that hold NaN or Inf, instead of refusing the file (exit 3).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar on stderr.")]


def _floats(flag: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: use comma-separated numbers, e.g. 0.485,0.456,0.406") from exc


def build_activation_settings(
    inputs: str | None,
    side: str,
    center: bool,
    batch_size: int,
    max_inputs: int | None,
    seed: int,
    mean: str | None,
    std: str | None,
    interpolation: str | None,
    device: str,
    skip_nonfinite: bool = False,
) -> ActivationSettings | None:
    """Validate the --activations options before any work starts (None without --activations)."""
    if inputs is None:
        given = [flag for flag, value in (("--center", center), ("--mean", mean), ("--std", std),
                                          ("--interpolation", interpolation), ("--max-inputs", max_inputs),
                                          ("--skip-nonfinite", skip_nonfinite))
                 if value]
        if side != "input":
            given.append("--activation-side")
        if given:
            raise UsageError(f"{', '.join(given)} apply to --activations, which was not given")
        return None
    if side not in ACTIVATION_SIDES:
        raise UsageError(f"--activation-side {side!r}: use input or output")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise UsageError(f"--interpolation {interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")
    from ..records import ActivationSettings

    if max_inputs is not None:
        from ..activations._guard import check_input_count

        check_input_count(max_inputs, f"--max-inputs {max_inputs}")
    return ActivationSettings(inputs=inputs, side=side, center=center, batch_size=batch_size, max_inputs=max_inputs,
                              seed=seed, mean=_floats("--mean", mean), std=_floats("--std", std),
                              interpolation=interpolation, device=device,
                              nonfinite="skip" if skip_nonfinite else "refuse")
