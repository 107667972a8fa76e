"""A TorchScript archive's ``code/`` files read as text: conv geometry and the order of calls, never run.

The serialized TorchScript is Python syntax, so :func:`ast.parse` turns it into a tree without executing
anything (``ast.literal_eval`` reads only literals). From each class it takes:

- its ``Final`` constants (a scripted ``nn.Conv2d`` declares ``stride``, ``dilation``, ``groups``,
  ``padding_mode`` there) and its ``__parameters__`` / ``__buffers__`` lists;
- the conv calls of its methods (``torch.conv2d``, ``torch._convolution``, ``torch.conv_transpose2d``, ...)
  whose weight is one of its attributes, with their literal stride, dilation, groups and transposed flag,
  and the mode of a pad call that feeds the conv (``torch.pad(x, ..., "circular")``, reflection, ...);
- the order in which ``forward`` calls submodules and its own methods, in evaluation order (arguments
  before the call), which gives the static execution order of the convs. Branches are read in source
  order, so a model whose order depends on a condition gets the order as written.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

CONV_SIGNATURES = {  # positional argument names after (input, weight, bias)
    "conv1d": ("stride", "padding", "dilation", "groups"),
    "conv2d": ("stride", "padding", "dilation", "groups"),
    "conv3d": ("stride", "padding", "dilation", "groups"),
    "conv_transpose1d": ("stride", "padding", "output_padding", "groups", "dilation"),
    "conv_transpose2d": ("stride", "padding", "output_padding", "groups", "dilation"),
    "conv_transpose3d": ("stride", "padding", "output_padding", "groups", "dilation"),
    "_convolution": ("stride", "padding", "dilation", "transposed", "output_padding", "groups"),
    "convolution": ("stride", "padding", "dilation", "transposed", "output_padding", "groups"),
}
PAD_MODES = {"reflection_pad1d": "reflect", "reflection_pad2d": "reflect", "reflection_pad3d": "reflect",
             "replication_pad1d": "replicate", "replication_pad2d": "replicate",
             "replication_pad3d": "replicate", "constant_pad_nd": "zeros"}
MAX_EVENTS = 1_000_000


@dataclass
class ClassCode:
    """What one class's code declares: constants, parameter/buffer names, methods, conv calls by weight."""

    finals: dict[str, Any] = field(default_factory=dict)
    parameters: list[str] | None = None
    buffers: list[str] | None = None
    methods: dict[str, ast.FunctionDef] = field(default_factory=dict)
    convs: dict[str, dict[str, Any]] = field(default_factory=dict)  # weight attribute -> geometry


def _literal(node: ast.AST | None, env: dict[str, Any]) -> Any:
    if node is None:
        return None
    if isinstance(node, ast.Name):
        return env.get(node.id)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _self_attr(node: ast.AST, env: dict[str, Any]) -> str | None:
    """The attribute of ``self`` an expression names: ``self.x``, ``getattr(self, "x")``, or a local bound to one."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and len(node.args) == 2 and isinstance(node.args[0], ast.Name) and node.args[0].id == "self"
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
        return node.args[1].value
    if isinstance(node, ast.Name):
        bound = env.get(node.id)
        return bound[1] if isinstance(bound, tuple) and len(bound) == 2 and bound[0] == "self" else None
    return None


def _conv_geometry(call: ast.Call, op: str, env: dict[str, Any], pads: dict[str, str]) -> dict[str, Any]:
    names = CONV_SIGNATURES[op]
    given = {name: call.args[3 + i] for i, name in enumerate(names) if 3 + i < len(call.args)}
    given.update({k.arg: k.value for k in call.keywords if k.arg})
    out: dict[str, Any] = {"transposed": op.startswith("conv_transpose")}
    for key in ("stride", "dilation", "groups", "transposed"):
        value = _literal(given.get(key), env)
        if key == "groups" and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            out[key] = value
        elif key == "transposed" and isinstance(value, bool):
            out[key] = value
        elif key in ("stride", "dilation") and isinstance(value, (list, tuple)) and value \
                and all(isinstance(v, int) and v >= 1 for v in value):
            out[key] = tuple(value)
    source = call.args[0] if call.args else None
    out["padding_mode"] = pads.get(source.id, "zeros") if isinstance(source, ast.Name) else "zeros"
    return out


def _pad_mode(call: ast.Call) -> str | None:
    op = _dotted(call.func).rsplit(".", 1)[-1]
    if op in PAD_MODES:
        return PAD_MODES[op]
    if op in ("pad", "_pad"):
        for arg in [*call.args[2:3], *(k.value for k in call.keywords if k.arg == "mode")]:
            if isinstance(arg, ast.Constant) and arg.value in ("circular", "reflect", "replicate", "constant"):
                return "zeros" if arg.value == "constant" else arg.value
        return "zeros"
    return None


def _scan_method(func: ast.FunctionDef, info: ClassCode) -> None:
    """Record the conv calls of one method whose weight is an attribute of ``self``."""
    env: dict[str, Any] = {}
    pads: dict[str, str] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
            attr = _self_attr(value, env)
            if attr is not None:
                env[target] = ("self", attr)
            elif isinstance(value, ast.Call) and _pad_mode(value):
                pads[target] = _pad_mode(value)
            else:
                literal = _literal(value, {})
                if literal is not None:
                    env[target] = literal
    for node in ast.walk(func):
        if isinstance(node, ast.Call):
            op = _dotted(node.func)
            short = op.rsplit(".", 1)[-1]
            if op.startswith("torch.") and short in CONV_SIGNATURES and len(node.args) >= 2:
                attr = _self_attr(node.args[1], env)
                if attr is not None and attr not in info.convs:
                    info.convs[attr] = _conv_geometry(node, short, env, pads)


def parse_classes(code: dict[str, str]) -> dict[str, ClassCode]:
    """Every class of every code file, by qualified name (``__torch__.torch.nn.modules.conv.Conv2d``)."""
    classes: dict[str, ClassCode] = {}
    for filename, text in code.items():
        module = filename[: -len(".py")].replace("/", ".")
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                try:
                    classes[f"{module}.{node.name}"] = _read_class(node)
                except (RecursionError, MemoryError):
                    continue
    return classes


def _read_class(node: ast.ClassDef) -> ClassCode:
    info = ClassCode()
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            ann = item.annotation
            if isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name) and ann.value.id == "Final":
                value = _literal(item.value, {})
                if value is not None:
                    info.finals[item.target.id] = value
        elif isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
            if item.targets[0].id in ("__parameters__", "__buffers__"):
                value = _literal(item.value, {})
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    setattr(info, item.targets[0].id.strip("_"), value)
        elif isinstance(item, ast.FunctionDef):
            info.methods[item.name] = item
            _scan_method(item, info)
    return info


def call_order(root: Any, classes: dict[str, ClassCode], class_of) -> list[tuple[Any, str]]:
    """(module object, prefix) of submodules in the order ``forward`` reaches them, depth first, statically.

    ``class_of(obj)`` gives an object's qualified class name; submodules are looked up in its attributes.
    Each (module, method) is expanded once; the walk is bounded.
    """
    order: list[tuple[Any, str]] = []
    expanded: set[tuple[int, str]] = set()
    budget = [MAX_EVENTS]

    def visit_module(obj: Any, prefix: str, method: str) -> None:
        key = (id(obj), method)
        if key in expanded:
            return
        expanded.add(key)
        if method == "forward":
            order.append((obj, prefix))
        info = classes.get(class_of(obj))
        func = info.methods.get(method) if info else None
        if func is None:
            return
        env: dict[str, Any] = {}
        for stmt in func.body:
            visit(stmt, obj, prefix, env)

    def visit(node: ast.AST, obj: Any, prefix: str, env: dict[str, Any]) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise RecursionError("call graph too large")
        if isinstance(node, ast.Assign):
            visit(node.value, obj, prefix, env)
            attr = _self_attr(node.value, env)
            if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and attr is not None:
                env[node.targets[0].id] = ("self", attr)
            return
        if isinstance(node, ast.Call):
            for child in [*node.args, *(k.value for k in node.keywords)]:
                visit(child, obj, prefix, env)
            func = node.func
            if isinstance(func, ast.Attribute):
                target = func.value
                if isinstance(target, ast.Name) and target.id == "self":
                    visit_module(obj, prefix, func.attr)
                    return
                attr = _self_attr(target, env)
                child = getattr(obj, "attributes", {}).get(attr) if attr is not None else None
                if child is not None and hasattr(child, "attributes"):
                    visit_module(child, f"{prefix}.{attr}" if prefix else attr, func.attr)
                    return
                visit(target, obj, prefix, env)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, obj, prefix, env)

    visit_module(root, "", "forward")
    return order
