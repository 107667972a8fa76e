"""Pure analysis: tensors and records in, records out. Nothing here opens files, prints or logs."""

from ._threads import available_cores, configure_threads
from .bottleneck import locate_bottleneck
from .counting import DEGREE_METRICS, TOLERANCE_RULES, count_modes, frequency_degrees
from .geometry import KernelPlan, plan_kernel
from .layer import analyze_layer, fold_batchnorm, layer_evidence, layers_in_flight, resolve_grid, submit_layer
from .spectrum import compute_spectrum, representative_frequencies

__all__ = [
    "DEGREE_METRICS", "TOLERANCE_RULES", "KernelPlan", "analyze_layer", "available_cores", "compute_spectrum",
    "configure_threads", "count_modes", "fold_batchnorm", "frequency_degrees", "layer_evidence", "layers_in_flight",
    "locate_bottleneck", "plan_kernel", "representative_frequencies", "resolve_grid", "submit_layer",
]
