"""Lightning checkpoints whose hyper-parameters hold objects of other libraries load with no trust flag.

The omegaconf classes are faked: a module registered in ``sys.modules`` only while the file is written, so the
test needs no omegaconf, and the loader cannot import the class even if it tried.
"""

from __future__ import annotations

import argparse
import typing
import sys
import types
from collections import OrderedDict

import pytest
import torch

from cbn_inspect import inspect_source, load
from cbn_inspect.errors import UnsafeContentError

SENTINEL = []


class _FakeModules:
    """``omegaconf.dictconfig.DictConfig`` and ``omegaconf.listconfig.ListConfig``, present at write time only."""

    def __enter__(self):
        root, dict_mod, list_mod = (types.ModuleType(n) for n in
                                    ("omegaconf", "omegaconf.dictconfig", "omegaconf.listconfig"))

        class DictConfig:
            def __init__(self, content):
                self._content = content

            def __setstate__(self, state):  # would run on load if the real class were imported
                SENTINEL.append("DictConfig.__setstate__ ran")

        class ListConfig(DictConfig):
            pass

        DictConfig.__module__, ListConfig.__module__ = "omegaconf.dictconfig", "omegaconf.listconfig"
        DictConfig.__qualname__, ListConfig.__qualname__ = "DictConfig", "ListConfig"
        dict_mod.DictConfig, list_mod.ListConfig = DictConfig, ListConfig
        self.saved = {n: sys.modules.get(n) for n in ("omegaconf", "omegaconf.dictconfig", "omegaconf.listconfig")}
        sys.modules.update({"omegaconf": root, "omegaconf.dictconfig": dict_mod, "omegaconf.listconfig": list_mod})
        return DictConfig, ListConfig

    def __exit__(self, *exc):
        for name, module in self.saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _lightning(tmp_path, legacy=False):
    torch.manual_seed(0)
    with _FakeModules() as (DictConfig, ListConfig):
        ckpt = {
            "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.1.0",
            "state_dict": OrderedDict([("model.stem.weight", torch.randn(8, 3, 3, 3)),
                                       ("model.body.weight", torch.randn(8, 8, 3, 3))]),
            "hyper_parameters": {"cfg": DictConfig({"lr": 0.1, "layers": ListConfig([1, 2])}),
                                 "args": argparse.Namespace(lr=0.1, depth=3),
                                 # omegaconf keeps types as values: object_type builtins.dict, typing.Any
                                 "types": {"object_type": dict, "key_type": typing.Any, "n": int}},
        }
        path = tmp_path / ("legacy.ckpt" if legacy else "model.ckpt")
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_lightning_hyper_parameters_become_inert_placeholders(tmp_path, legacy):
    path = _lightning(tmp_path, legacy)
    assert "omegaconf" not in sys.modules
    SENTINEL.clear()
    loaded = load(path)
    assert [layer.name for layer in loaded.layers] == ["model.stem", "model.body"]
    assert SENTINEL == [] and "omegaconf" not in sys.modules  # nothing imported, nothing of it ran
    (note,) = [n for n in loaded.source.notes if "inert placeholders" in n]
    assert "omegaconf.dictconfig.DictConfig" in note and "argparse.Namespace" in note and "typing.Any" in note
    report = inspect_source(path)
    assert len(report.layers) == 2 and any("inert placeholders" in w for w in report.warnings)


class _Evil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _System:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


@pytest.mark.parametrize("payload", [_Evil(), _System()], ids=["eval", "os.system"])
def test_hyper_parameters_that_would_call_code_are_still_refused(tmp_path, payload):
    ckpt = {"state_dict": {"conv.weight": torch.randn(4, 3, 3, 3)}, "hyper_parameters": {"x": payload}}
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeContentError, match="could run code"):
        load(tmp_path / "evil.ckpt")


def test_a_function_of_another_library_is_refused(tmp_path):
    # a REDUCE on a lower-case (function) global of a module that is not a code module: it would be called
    module = types.ModuleType("mypkg_factory")

    def make_model():
        SENTINEL.append("make_model ran")

    make_model.__module__, make_model.__qualname__ = "mypkg_factory", "make_model"
    module.make_model = make_model

    class Call:
        def __reduce__(self):
            return (make_model, ())

    sys.modules["mypkg_factory"] = module
    try:
        torch.save({"state_dict": {"conv.weight": torch.randn(4, 3, 3, 3)}, "hyper_parameters": {"m": Call()}},
                   tmp_path / "f.ckpt")
    finally:
        del sys.modules["mypkg_factory"]
    SENTINEL.clear()
    with pytest.raises(UnsafeContentError, match="function"):
        load(tmp_path / "f.ckpt")
    assert SENTINEL == []
