"""Activations: run a model under an explicit policy and profile the feature maps its conv layers see.

Running a model is not loading weights, so it lives here, apart from :mod:`cbn_inspect.loaders`:

- :mod:`.open` -- which sources can be executed and how (:func:`open_runner`);
- :mod:`.runners`, :mod:`._torchscript`, :mod:`._onnx` -- runners for ``nn.Module`` (timm, whole modules,
  the bundled samples rebuilt from metadata), TorchScript (``trust_code`` only) and onnxruntime;
- :mod:`.inputs` -- the INPUTS readers (``noise``, ``samples``, image folders, tensor files) and the
  preprocessing taken from the model's config;
- :mod:`.gram` -- the streaming per-frequency Gram accumulator (pure tensor code);
- :mod:`.profile` -- :func:`profile_activations`, which hands the analysis plain records: each layer's
  singular values as a :class:`~cbn_inspect.records.Spectrum`, counted and located by the same code as
  the weights.
"""

from __future__ import annotations

from .gram import GramAccumulator
from .inputs import DEFAULT_NOISE_COUNT, SAMPLE_IMAGES, ModelInput
from .open import open_runner
from .profile import profile_activations
from .runners import ModuleRunner

__all__ = ["DEFAULT_NOISE_COUNT", "GramAccumulator", "ModelInput", "ModuleRunner", "SAMPLE_IMAGES", "open_runner",
           "profile_activations"]
