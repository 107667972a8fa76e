"""The activation memory plan (issue 22): batch size and layer groups within --max-memory, or exit 7 at once.

The end-to-end cases run a scaled-down copy of the PP-OCRv4 recogniser's situation (an ONNX model on
3x48x320 inputs whose Gram sums, 677 MiB together, do not fit next to the runtime under the limit) in a
child process that reports its own peak RSS; the limits are set from the peak of the same model's weight
report in the same environment, so the test does not depend on how large the installed libraries are.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from cbn_inspect.activations._plan import SLACK, LayerShape, batch_bytes, plan_memory
from cbn_inspect.errors import ResourceLimitError

MiB = 2**20


def _layers() -> list[LayerShape]:
    return [LayerShape("a", (64, 24, 160)), LayerShape("b", (128, 12, 160)), LayerShape("b2", (128, 12, 160), alias="b"),
            LayerShape("c", (128, 12, 160))]


def test_everything_fits_in_one_pass_with_room():
    plan = plan_memory(_layers(), 32, 8 * 2**30)
    assert plan.batch_size == 32 and plan.groups == (("a", "b", "c"),) and not plan.notes


def test_groups_and_a_smaller_batch_when_the_gram_sums_do_not_fit_together():
    layers = _layers()
    gram = {layer.name: layer.gram_bytes for layer in layers}
    assert gram["b"] == 12 * 81 * 128 * 128 * 16 and gram["b2"] == 0  # an alias shares its layer's sums
    room = int(SLACK * gram["b"]) + 200 * MiB
    plan = plan_memory(layers, 32, room)
    assert len(plan.groups) == 3 and [n for g in plan.groups for n in g] == ["a", "b", "c"]
    assert plan.estimate_bytes <= room and plan.batch_size < 32
    assert any("3 groups" in note for note in plan.notes) and any("batch size lowered" in note for note in plan.notes)
    for group in plan.groups:  # every pass within the room
        names = set(group)
        need = int(SLACK * sum(gram[n] for n in names)) + batch_bytes(layers, names, plan.batch_size, False)
        assert need <= room


def test_a_layer_that_cannot_fit_is_refused_saying_what_would():
    with pytest.raises(ResourceLimitError) as info:
        plan_memory(_layers(), 32, 250 * MiB, limit_mb=800)
    text = info.value.one_line()
    assert "layer b (128 channels on grid 12x160)" in text and "--max-memory" in text and "would fit" in text
    assert "1 of the layers fit alone" in text  # layer a (64 channels on 24x160) does


def test_a_static_batch_axis_is_not_split():
    plan = plan_memory(_layers(), 32, int(SLACK * _layers()[1].gram_bytes) + 100 * MiB, fixed_batch=4)
    assert plan.batch_size >= 4


# ---- the recogniser case, scaled down, end to end ------------------------------------------------------------

PEAK = """
import resource, runpy, sys, atexit
atexit.register(lambda: sys.stderr.write("PEAK_KB %d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.argv = ["cbn-inspect"] + sys.argv[1:]
runpy.run_module("cbn_inspect", run_name="__main__")
"""


def _recogniser(path, wide: int = 128) -> None:
    """Six convs on 3x48x320 inputs, strides like the recogniser's (2x2, then 2x1): 677 MiB of Gram sums
    (``wide`` 128), or 1 GiB for each of the last two layers alone (``wide`` 256)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    specs = [("c1", 3, 16, 3, [2, 2]), ("c2", 16, 64, 3, [1, 1]), ("c3", 64, 64, 3, [2, 1]),
             ("c4", 64, wide, 1, [1, 1]), ("c5", wide, wide, 3, [1, 1]), ("c6", wide, wide, 3, [1, 1])]
    nodes, inits, x = [], [], "x"
    for name, cin, cout, k, stride in specs:
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name + ".w"))
        nodes += [helper.make_node("Conv", [x, name + ".w"], [name + ".y"], name=name, strides=stride, pads=[k // 2] * 4),
                  helper.make_node("Relu", [name + ".y"], [name + ".r"])]
        x = name + ".r"
    graph = helper.make_graph(nodes, "rec", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 48, 320])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _cli(*args) -> tuple[int, str, int, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
               COLUMNS="100")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PEAK, *map(str, args)], capture_output=True, text=True,
                          timeout=240, env=env)
    lines = done.stderr.strip().splitlines()
    peak = int(lines[-1].split()[1]) * 1024
    return done.returncode, "\n".join(lines[:-1]), peak, time.monotonic() - started


@pytest.fixture(scope="module")
def recogniser(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("rec")
    _recogniser(folder / "rec.onnx")
    _recogniser(folder / "wide.onnx", wide=256)
    code, err, base, _ = _cli(folder / "rec.onnx", "-q")  # the weight report alone: the process's own footprint
    assert code == 0, err
    return folder, base


@pytest.mark.slow
def test_the_recogniser_case_finishes_under_max_memory(recogniser):
    folder, base = recogniser
    path = folder / "rec.onnx"
    limit_mb = (base + 560 * MiB) // MiB
    code, err, peak, _ = _cli(path, "--activations", "noise", "--max-inputs", "16", "--max-memory", limit_mb, "-q",
                              "--json", "-")
    assert code == 0, err
    assert peak < limit_mb * MiB, (peak / MiB, limit_mb)


@pytest.mark.slow  # about 20 s: three child processes, and the weight report of two 256-channel layers
def test_the_recogniser_case_is_refused_at_once_when_no_layer_fits(recogniser):
    """Each of the last two layers needs 1 GiB of Gram sums; the weight report fits in what is left."""
    folder, base = recogniser
    path = folder / "wide.onnx"
    limit_mb = (base + 500 * MiB) // MiB
    code, err, peak, seconds = _cli(path, "--activations", "noise", "--max-inputs", "16",
                                  "--max-memory", limit_mb)
    assert code == 7, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "would fit" in lines[0] and "Gram sums" in lines[0]
    assert peak < limit_mb * MiB


def test_a_run_longer_than_the_time_budget_is_refused_after_the_first_batch():
    """--max-inputs is bounded by --timeout too: the first batch's pace against the whole run."""
    from cbn_inspect._limits import TimeBudget
    from cbn_inspect.activations.profile import _check_time

    clock = TimeBudget(10.0, "--activations noise")
    with pytest.raises(ResourceLimitError) as info:
        _check_time(clock, seconds=0.5, inputs=4, total=1_000_000)  # 0.125 s each: 125,000 s
    assert "--timeout leaves" in info.value.one_line() and "inputs fit (--max-inputs)" in info.value.one_line()
    _check_time(clock, seconds=0.5, inputs=4, total=40)  # 5 s: fits
    _check_time(TimeBudget(None, "x"), seconds=0.5, inputs=4, total=10**6)  # no budget: nothing to check
