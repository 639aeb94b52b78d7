"""Receptive field of every layer of a CNN, by the recurrence of Araujo et al. (2019).

For a layer with kernel k, stride s, padding p and dilation d (effective kernel
k' = d (k - 1) + 1), going from layer l-1 to layer l, along each spatial axis:

    jump        j_l = j_{l-1} * s                               (Eq. 1: cumulative stride)
    field       r_l = r_{l-1} + (k' - 1) * j_{l-1}              (Eq. 2)
    start       c_l = c_{l-1} + ((k' - 1) / 2 - p) * j_{l-1}    (centre of the first unit)
    output      n_l = floor((n_{l-1} + 2p - k') / s) + 1

with j_0 = 1, r_0 = 1, c_0 = 0 (input pixel centres at 0, 1, ..., n_0 - 1). Every
unit of layer l sees the input pixels [c - (r - 1) / 2, c + (r - 1) / 2] around its
centre c = c_l + i * j_l (the span may reach into the padding).

Multi-path networks (residual additions, concatenations) are handled by tracing the
model with :mod:`torch.fx`: where paths meet, the spans of the first unit are united
(their jumps must agree). Pointwise layers and operations (activations, normalization,
dropout, additions, concatenation) keep the field; flattening the grid (``Flatten``,
``Linear`` after it) makes every output see the union of all units' fields. Anything
else is refused, naming the layer or operation, rather than guessed: a transposed
convolution, a convolution or pooling called as a function inside ``forward``, a shift
such as ``torch.roll``, a branch on the data. Normalization layers that compute statistics
over space (batch, layer, group and instance norm in training) in fact let every output
depend on the whole image; the table reports the field of the convolution and pooling
path, the quantity the literature calls the receptive field.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace

import pandas as pd
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

#: Layers that act on each position alone: they keep the field.
POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                     nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Mish, nn.Identity, nn.Dropout,
                     nn.Dropout2d, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
#: Functions and tensor methods that act on each position alone, or join paths position by
#: position (additions, concatenation along channels).
POINTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                       operator.truediv, torch.add, torch.mul, torch.cat, torch.relu,
                       torch.sigmoid, torch.tanh, F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu,
                       F.sigmoid, F.hardtanh, F.dropout, F.batch_norm, F.group_norm,
                       F.layer_norm, F.instance_norm}
POINTWISE_METHODS = {"add", "add_", "mul", "mul_", "relu", "relu_", "sigmoid", "tanh",
                     "contiguous", "clone", "float", "half", "bfloat16", "to", "type_as"}

COLUMNS = ["layer", "kernel", "stride", "padding", "dilation", "jump", "receptive_field",
           "output_size", "start"]


@dataclass(frozen=True)
class _Axis:
    """Receptive-field state of one spatial axis: jump, field, start, size."""

    jump: int
    field: int
    start: float
    size: int

    def through(self, kernel: int, stride: int, padding: int, dilation: int) -> _Axis:
        effective = dilation * (kernel - 1) + 1
        return _Axis(self.jump * stride,
                     self.field + (effective - 1) * self.jump,
                     self.start + ((effective - 1) / 2 - padding) * self.jump,
                     (self.size + 2 * padding - effective) // stride + 1)

    def union(self, other: _Axis) -> _Axis:
        if self.jump != other.jump or self.size != other.size:
            raise ValueError(f"Paths meet with different grids ({self} vs {other}).")
        low = min(self.start - (self.field - 1) / 2, other.start - (other.field - 1) / 2)
        high = max(self.start + (self.field - 1) / 2, other.start + (other.field - 1) / 2)
        return _Axis(self.jump, int(high - low + 1), (low + high) / 2, self.size)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _padding(module: nn.Module, kernel: tuple[int, int], dilation: tuple[int, int]):
    """The padding before the first pixel, per axis; ``padding="same"`` pads
    d (k - 1) // 2 there (PyTorch puts any odd pixel after the last one)."""
    if module.padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    if module.padding == "valid":
        return (0, 0)
    return _pair(module.padding)


def _geometry(module: nn.Module, in_size: tuple[int, int], out_size: tuple[int, int]):
    """(kernel, stride, padding, dilation) pairs of a spatial layer, or None if the
    layer keeps the field. Raises NotImplementedError for any other layer."""
    if isinstance(module, nn.ConvTranspose2d):
        raise NotImplementedError(f"{module}: a transposed convolution spreads each input "
                                  f"pixel over several outputs; the recurrence does not cover it.")
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel, dilation = _pair(module.kernel_size), _pair(getattr(module, "dilation", 1))
        return kernel, _pair(module.stride), _padding(module, kernel, dilation), dilation
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        if any(i % o for i, o in zip(in_size, out_size)):
            raise NotImplementedError(
                f"{module} maps {in_size} to {out_size}, which is not a whole-number "
                f"pooling; receptive fields are defined for uniform grids only.")
        stride = tuple(i // o for i, o in zip(in_size, out_size))
        return stride, stride, (0, 0), (1, 1)
    if isinstance(module, POINTWISE_MODULES) and in_size == out_size:
        return None
    raise NotImplementedError(f"Don't know the receptive field of {type(module).__name__}, "
                              f"which maps {in_size} to {out_size}.")


def _pointwise(node: fx.Node) -> bool:
    """Whether a ``call_function`` or ``call_method`` node acts position by position."""
    if node.op == "call_method":
        return node.target in POINTWISE_METHODS
    return node.target in POINTWISE_FUNCTIONS


#: Layers whose geometry :func:`_geometry` reads off their attributes.
SPATIAL_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d,
                   nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class _Tracer(fx.Tracer):
    """torch.fx's tracer, taking the pointwise and spatial layers whole: a subclass of one
    (:class:`normlab.norms.GroupNorm`, :class:`normlab.model.StandardizedConv2d`,
    :class:`normlab.model.GlobalAvgPool2d`) keeps its geometry, however it computes."""

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return (isinstance(module, POINTWISE_MODULES + SPATIAL_MODULES)
                or super().is_leaf_module(module, name))


def _flattens(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` flattens a grid (``nn.Flatten``, ``torch.flatten``, ``.flatten``)."""
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.Flatten)
    return node.target in (torch.flatten, "flatten")


def _collapsed(axis: _Axis) -> _Axis:
    """The axis once its grid is flattened or reduced: one unit that sees every unit's
    field."""
    field = axis.field + (axis.size - 1) * axis.jump
    return _Axis(axis.jump * axis.size, field, axis.start + (axis.size - 1) * axis.jump / 2, 1)


def _spatial(node: fx.Node) -> tuple[int, int] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape[-2:]) if shape is not None and len(shape) == 4 else None


def _is_tensor(node: fx.Node) -> bool:
    return getattr(node.meta.get("tensor_meta"), "shape", None) is not None


def receptive_field(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)
                    ) -> pd.DataFrame:
    """Layer-by-layer receptive-field table of ``model`` for inputs (C, H, W).

    One row per convolution and pooling layer (a layer that changes the grid or the field),
    in execution order, and a last row ``output`` for the network's output. Columns:
    ``layer`` (module name), ``kernel``, ``stride``, ``padding``, ``dilation`` (of the
    layer), ``jump`` (cumulative stride, input pixels between neighbouring units),
    ``receptive_field`` (input pixels), ``output_size`` (units per axis), ``start``
    (input coordinate of the centre of the first unit). Square values are shown as one
    number, others as ``(height, width)``; the ``output`` row leaves the layer columns
    empty.

    Raises:
        NotImplementedError: a layer or operation whose field the recurrence cannot give
            exactly (the message names it), or a forward that torch.fx cannot trace (a
            branch on the data).
        ValueError: paths with different grids are added or concatenated, or the input is
            too small for a layer.
    """
    try:
        graph_module = fx.GraphModule(model, _Tracer().trace(model))
    except fx.proxy.TraceError as error:
        raise NotImplementedError(
            f"receptive_field traces the model with torch.fx, which cannot follow "
            f"{type(model).__name__}.forward ({error}): a forward that branches on the data "
            f"has no single receptive field; pass the part of the model without it.") from error
    was_training = model.training
    model.eval()
    try:
        ShapeProp(graph_module).propagate(torch.zeros(1, *input_size))
    except RuntimeError as error:
        raise ValueError(f"An input of size {tuple(input_size)} does not pass through the model: "
                         f"{str(error).splitlines()[0]} Use a larger input_size.") from error
    finally:
        model.train(was_training)
    modules = dict(graph_module.named_modules())
    state: dict[fx.Node, tuple[_Axis, _Axis]] = {}
    rows = []
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            state[node] = tuple(_Axis(1, 1, 0.0, n) for n in input_size[1:])
            continue
        inputs = [state[a] for a in node.all_input_nodes if a in state]
        if node.op == "output":
            rows.append(_row("output", inputs[0], None))
            continue
        if not inputs or not _is_tensor(node):   # parameters, sizes, constants
            continue
        axes = inputs[0]
        for other in inputs[1:]:
            axes = tuple(a.union(b) for a, b in zip(axes, other))
        out_size = _spatial(node)
        flat = all(_spatial(a) is None for a in node.all_input_nodes if a in state)
        if out_size is None and (flat or _flattens(node, modules)):
            # flattened (or already flat: Linear, activations): every output sees every unit
            state[node] = tuple(_collapsed(a) for a in axes)
            continue
        if out_size is None:
            name = getattr(node.target, "__name__", node.target)
            raise NotImplementedError(
                f"Don't know the receptive field of {name} (in forward as {node.name}), which "
                f"turns a grid into a tensor of another shape; flatten it with nn.Flatten.")
        if node.op == "call_module":
            geometry = _geometry(modules[node.target], (axes[0].size, axes[1].size), out_size)
            if geometry is not None:
                # the output size comes from the traced shapes (exact with ceil_mode too)
                axes = tuple(replace(a.through(*g), size=n)
                             for a, g, n in zip(axes, zip(*geometry), out_size))
                rows.append(_row(node.target, axes, geometry))
        elif not (_pointwise(node) and out_size == (axes[0].size, axes[1].size)):
            name = getattr(node.target, "__name__", node.target)
            raise NotImplementedError(
                f"Don't know the receptive field of {name} (called in forward as {node.name}): "
                f"only pointwise operations and joins are followed there; use a module "
                f"(nn.Conv2d, nn.MaxPool2d, ...) for anything that mixes positions.")
        state[node] = axes
    return pd.DataFrame(rows, columns=COLUMNS, dtype=object)


def _row(name: str, axes: tuple[_Axis, _Axis], geometry) -> dict:
    def show(pair):
        return pair[0] if pair[0] == pair[1] else tuple(pair)

    kernel, stride, padding, dilation = geometry or (("", ""),) * 4
    return {"layer": name, "kernel": show(kernel), "stride": show(stride),
            "padding": show(padding), "dilation": show(dilation),
            "jump": show([a.jump for a in axes]), "receptive_field": show([a.field for a in axes]),
            "output_size": show([a.size for a in axes]), "start": show([a.start for a in axes])}
