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

The model is traced with :mod:`torch.fx` and run once, in evaluation mode, on a zero image
of ``input_size``; the calculator follows the image's height and width axes through every
operation, reading where they are from the tensors' shapes:

- convolutions and poolings (modules, or ``F.conv2d``, ``F.max_pool2d``, ... in a forward)
  apply the recurrence; indexing that crops or strides the grid (``x[..., 1:-1, ::2]``) is a
  kernel of 1;
- elementwise operations keep the field: an operation counts as elementwise when PyTorch
  tags every ATen operation it runs as pointwise (``torch.Tag.pointwise``), or when, on a
  random input, it gives at a pixel alone what it gives there on the whole grid;
  normalization layers count as elementwise too (see below);
- reshapes, permutes, splits and concatenations keep it where they leave the height and
  width axes intact (a row-major reshape keeps an axis where the sizes before it multiply
  to the same number);
- where paths meet (additions, products, concatenations), the spans of the first unit are
  united (their jumps must agree); a path pooled over the whole grid and broadcast back onto
  it (a squeeze-and-excitation gate) lets every unit see the whole input: the field is then
  the input's size, and the table marks it ``global``;
- flattening to (batch, features), a reduction over an axis (``mean``, ``amax``) or a
  ``Linear`` over it leave one unit, which sees the union of all units' fields.

Anything else raises, naming the layer and what to do: ValueError where there is no
receptive field on the input grid (a transposed convolution or an upsampling, whose
neighbouring units see unequal windows; ``torch.roll``; a recurrent or attention layer; a
reshape that merges height or width into another axis), NotImplementedError where the
calculator cannot follow the model (an operation it does not know, a branch on the data).
Normalization layers that compute statistics over space (batch, layer, group and instance
norm in training) in fact let every output depend on the whole image; the table reports the
field of the convolution and pooling path, the quantity the literature calls the receptive
field.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace
from functools import reduce

import pandas as pd
import torch
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode

from .norms import FilterResponseNorm2d, RMSGroupNorm

AXES = ("height", "width")

#: Normalization layers: they keep the field (statistics over space are left out, see above),
#: torch's and normlab's own (filter response and RMS group norm compute theirs over space).
NORM_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
                *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()), FilterResponseNorm2d,
                RMSGroupNorm)
#: Layers whose geometry :func:`_module_geometry` reads off their attributes.
SPATIAL_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
#: Layers with no receptive field on the input grid, and why.
REFUSED_MODULES = (
    ("transposed", nn.modules.conv._ConvTransposeNd),
    ("upsampling", (nn.Upsample, nn.PixelShuffle)),
    ("sequence", (nn.RNNBase, nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder,
                  nn.TransformerDecoder, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)),
)
REASONS = {
    "transposed": "a transposed convolution spreads each input unit over several outputs, so "
                  "neighbouring units see windows of unequal size",
    "upsampling": "an upsampling gives neighbouring units unequal windows of its input (the jump "
                  "would be a fraction of a unit)",
    "roll": "a roll wraps the grid around, so units near one edge see pixels at the other",
    "sequence": "every output of a recurrent or attention layer can depend on every position of "
                "its sequence",
}
#: Functions and tensor methods, by name, of each kind the calculator follows or refuses.
FUNCTION_KINDS = {
    "spatial": {"conv2d", "max_pool2d", "max_pool2d_with_indices", "avg_pool2d",
                "adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"},
    "norm": {"batch_norm", "group_norm", "layer_norm", "instance_norm", "local_response_norm",
             "rms_norm"},
    "reshape": {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
                "reshape_as", "squeeze_", "unsqueeze_"},
    "relabel": {"permute", "transpose", "movedim", "moveaxis", "swapaxes", "swapdims", "mean",
                "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod",
                "median", "nansum", "nanmean", "argmax", "argmin", "all", "any"},
    "split": {"chunk", "split", "tensor_split"},
    "join": {"cat", "concat", "concatenate", "expand", "expand_as", "broadcast_to"},
    "linear": {"linear"},
    "getitem": {"getitem"},
    "transposed": {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"},
    "upsampling": {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
                   "pixel_shuffle"},
    "roll": {"roll"},
    "sequence": {"scaled_dot_product_attention", "multi_head_attention_forward"},
}
#: Operations that only describe a tensor (no values): they leave no path to follow.
METADATA = {"size", "dim", "numel", "nelement", "stride", "getattr", "is_contiguous", "get_device"}
#: ATen operations that copy a tensor or make a constant, without PyTorch's pointwise tag.
COPIES = {"clone", "_to_copy", "copy_", "detach", "alias", "lift_fresh", "scalar_tensor"}

COLUMNS = ["layer", "kernel", "stride", "padding", "dilation", "jump", "receptive_field", "global",
           "output_size", "start"]


@dataclass(frozen=True)
class _Axis:
    """Receptive-field state of one spatial axis: jump, field, start (input pixels), size
    (units); ``whole``: every unit sees the whole input along it (``field`` is then the
    input's size)."""

    jump: int
    field: int
    start: float
    size: int
    whole: bool = False

    def through(self, kernel: int, stride: int, padding: int, dilation: int, size: int) -> _Axis:
        effective = dilation * (kernel - 1) + 1
        field = self.field if self.whole else self.field + (effective - 1) * self.jump
        return _Axis(self.jump * stride, field,
                     self.start + ((effective - 1) / 2 - padding) * self.jump, size, self.whole)

    def span(self) -> tuple[float, float]:
        return self.start - (self.field - 1) / 2, self.start + (self.field - 1) / 2


def _united(a: _Axis, b: _Axis) -> _Axis:
    """The field of units that see both a's and b's (same grid: one unit's jump may differ)."""
    if a.whole or b.whole:
        return a if a.whole else b
    low, high = min(a.span()[0], b.span()[0]), max(a.span()[1], b.span()[1])
    return _Axis(max(a.jump, b.jump), int(high - low + 1), (low + high) / 2, a.size)


def _collapsed(axis: _Axis) -> _Axis:
    """The axis once its grid is flattened or reduced: one unit that sees every unit's
    field."""
    field = axis.field if axis.whole else axis.field + (axis.size - 1) * axis.jump
    return _Axis(axis.jump * axis.size, field, axis.start + (axis.size - 1) * axis.jump / 2, 1,
                 axis.whole)


@dataclass(frozen=True)
class _Grid:
    """The field along the image's height and width for a tensor, and where these axes are
    in its shape (``None``: the axis has one unit, which every element shares)."""

    axes: tuple[_Axis, _Axis]
    dims: tuple[int | None, int | None]

    @property
    def single(self) -> bool:
        return all(a.size == 1 for a in self.axes)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _padding(padding, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """The padding before the first pixel, per axis; ``padding="same"`` pads
    d (k - 1) // 2 there (PyTorch puts any odd pixel after the last one)."""
    if padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return (0, 0) if padding == "valid" else _pair(padding)


def _pooling(kernel, stride, padding, dilation=1):
    kernel = _pair(kernel)
    stride = _pair(stride) if stride not in (None, (), []) else kernel
    return kernel, stride, _padding(padding, kernel, _pair(dilation)), _pair(dilation)


def _adaptive(in_size, out_size, where: str):
    if any(i % o for i, o in zip(in_size, out_size)):
        raise ValueError(f"{where} pools {in_size} units into {out_size}, with windows of unequal "
                         f"size, so its units have no common receptive field: use an input size "
                         f"whose grid there is a multiple of {out_size}.")
    stride = tuple(i // o for i, o in zip(in_size, out_size))
    return stride, stride, (0, 0), (1, 1)


def _module_geometry(module: nn.Module, in_size, out_size, where: str):
    """(kernel, stride, padding, dilation) pairs of a convolution or pooling layer."""
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive(in_size, out_size, where)
    kernel, dilation = _pair(module.kernel_size), _pair(getattr(module, "dilation", 1))
    return kernel, _pair(module.stride), _padding(module.padding, kernel, dilation), dilation


class _Signatures:
    """The parameters of the functional convolution and poolings, to read arguments by name."""

    @staticmethod
    def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): ...

    @staticmethod
    def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False): ...

    @staticmethod
    def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True, divisor_override=None): ...


def _function_geometry(name: str, args, kwargs, in_size, out_size, where: str):
    """(kernel, stride, padding, dilation) pairs of a functional convolution or pooling."""
    if name.startswith("adaptive"):
        return _adaptive(in_size, out_size, where)
    stub = getattr(_Signatures, name if name in ("conv2d", "avg_pool2d") else "max_pool2d")
    bound = inspect.signature(stub).bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    if name == "conv2d":
        kernel, dilation = tuple(a["weight"].shape[-2:]), _pair(a["dilation"])
        return kernel, _pair(a["stride"]), _padding(a["padding"], kernel, dilation), dilation
    return _pooling(a["kernel_size"], a["stride"], a["padding"], a.get("dilation", 1))


def _kept(in_shape, out_shape, dim: int) -> int | None:
    """The axis of ``out_shape`` that holds axis ``dim`` of ``in_shape`` unchanged under a
    row-major reshape (same size, and the sizes before it multiply to the same number)."""
    before = math.prod(in_shape[:dim])
    for d, size in enumerate(out_shape):
        if size == in_shape[dim] and math.prod(out_shape[:d]) == before:
            return d
    return None


def _sources(node: fx.Node, args, kwargs) -> tuple[int | None, ...] | None:
    """For each axis of a permute's or reduction's output, the input axis it comes from
    (None: a reduced axis kept with size 1), found by running the operation on a meta tensor
    whose sizes label its axes; None if the operation does not run so (binary ``max``)."""
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    x, rest = args[0], args[1:]
    probe = torch.empty(tuple(range(2, x.ndim + 2)), device="meta")
    tensors = [a for a in (*rest, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if tensors:
        return None
    try:
        out = (getattr(probe, node.target)(*rest, **kwargs) if node.op == "call_method"
               else node.target(probe, *rest, **kwargs))
    except (RuntimeError, TypeError, ValueError):
        return None
    out = out[0] if isinstance(out, tuple) else out
    return tuple(s - 2 if s >= 2 else None for s in out.shape)


def _index_places(index, ndim: int):
    """For each axis of a tensor indexed by ``index``, its index (an int or a slice) and the
    output axis it becomes (None for an int); None for an index with tensors or lists."""
    index = list(index) if isinstance(index, tuple) else [index]
    if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) for i in index):
        return None
    given = sum(i is not None and i is not Ellipsis for i in index)
    at = index.index(Ellipsis) if Ellipsis in index else len(index)
    index = index[:at] + [slice(None)] * (ndim - given) + index[at + 1:]
    places, out = [], 0
    for item in index:
        if item is not None:
            places.append((item, None if isinstance(item, int) else out))
        out += not isinstance(item, int)
    return places


def _shapes(value):
    """A tensor's shape, a list of them for a tuple of tensors, or None for no tensor."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        return [tuple(v.shape) if isinstance(v, torch.Tensor) else None for v in value]
    return None


class _ATenLog(TorchDispatchMode):
    """Records the ATen operations run inside it."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func)
        return func(*args, **(kwargs or {}))


def _pointwise(op) -> bool:
    """Whether PyTorch tags an ATen operation (or, for an in-place one, its out-of-place
    form) as pointwise, or it only copies."""
    name = op.overloadpacket.__name__
    if torch.Tag.pointwise in op.tags or name in COPIES:
        return True
    packet = getattr(torch.ops.aten, name.rstrip("_"), None) if name.endswith("_") else None
    return packet is not None and any(torch.Tag.pointwise in getattr(packet, o).tags
                                      for o in packet.overloads())


class _Tracer(fx.Tracer):
    """torch.fx's tracer, taking normalization and spatial layers whole: a subclass of one
    (:class:`normlab.norms.GroupNorm`, :class:`normlab.model.StandardizedConv2d`,
    :class:`normlab.model.GlobalAvgPool2d`) keeps its geometry, however it computes."""

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return (isinstance(module, NORM_MODULES + SPATIAL_MODULES)
                or super().is_leaf_module(module, name))


def _name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__",
                                                                    str(node.target))


class _Walk(fx.Interpreter):
    """Runs the traced model once and, node after node, the field of what each computes:
    ``grids`` (per node), ``rows`` (the table)."""

    def __init__(self, graph_module: fx.GraphModule, model_name: str, input_size):
        super().__init__(graph_module)
        self.extra_traceback = False
        self.modules = dict(graph_module.named_modules())
        self.model_name, self.input_size, self.image = model_name, input_size, input_size[1:]
        self.grids: dict[fx.Node, _Grid] = {}
        self.rows: list[dict] = []

    # -- names, in the user's terms ------------------------------------------------------
    def where(self, node: fx.Node) -> str:
        """'layer features.3 (Conv2d)', or 'mul in layer features.1.block (SqueezeExcitation)'."""
        if node.op == "call_module":
            return f"layer {node.target} ({type(self.modules[node.target]).__name__})"
        stack = node.meta.get("nn_module_stack")
        if not stack:
            return f"{_name(node)} in {self.model_name}.forward"
        path, cls = list(stack.values())[-1]
        return f"{_name(node)} in layer {path} ({getattr(cls, '__name__', cls)})"

    def label(self, node: fx.Node) -> str:
        """The table's name for a layer: the module's, or the function's in its module."""
        if node.op == "call_module":
            return node.target
        stack = node.meta.get("nn_module_stack")
        return f"{list(stack.values())[-1][0]}.{_name(node)}" if stack else _name(node)

    def kind(self, node: fx.Node) -> str:
        if node.op == "call_module":
            module = self.modules[node.target]
            for kind, classes in REFUSED_MODULES:
                if isinstance(module, classes):
                    return kind
            kinds = (("spatial", SPATIAL_MODULES), ("norm", NORM_MODULES),
                     ("reshape", (nn.Flatten, nn.Unflatten)), ("linear", nn.Linear))
            return next((k for k, classes in kinds if isinstance(module, classes)), "other")
        if node.op in ("call_function", "call_method"):
            name = _name(node)
            return next((k for k, names in FUNCTION_KINDS.items() if name in names), "other")
        return node.op

    # -- running -------------------------------------------------------------------------
    def run_node(self, node: fx.Node):
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        kind = self.kind(node)
        with _ATenLog() as log:
            try:
                result = getattr(self, node.op)(node.target, args, kwargs)
            except Exception as error:
                raise ValueError(self.failure(node, args, kwargs, error)) from error
        grids = [self.grids[a] for a in node.all_input_nodes if a in self.grids]
        if node.op == "placeholder" and not self.grids:
            self.grids[node] = _Grid(tuple(_Axis(1, 1, 0.0, n) for n in self.image), (2, 3))
        elif node.op == "output":
            if not grids:
                raise ValueError(f"The output of {self.model_name} does not depend on its input.")
            self.rows.append(_row("output", grids[0].axes, None))
        elif grids:
            grid = self.step(node, kind, args, kwargs, result, log.ops, grids)
            if grid is not None:
                self.grids[node] = grid
        return result

    def failure(self, node: fx.Node, args, kwargs, error: Exception) -> str:
        """Why an input of ``input_size`` does not pass ``node``, and what to do."""
        text = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        message = f"An input of size {self.input_size} does not pass {self.where(node)}: {text}."
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        module = self.modules.get(node.target) if node.op == "call_module" else None
        channels = getattr(module, "in_channels", None)
        if node.op == "call_function" and _name(node) == "conv2d":
            bound = inspect.signature(_Signatures.conv2d).bind_partial(*args, **kwargs)
            weight, groups = bound.arguments.get("weight"), bound.arguments.get("groups", 1)
            channels = weight.shape[1] * groups if isinstance(weight, torch.Tensor) else None
        if channels is not None and x is not None and x.ndim >= 3 and x.shape[-3] != channels:
            seen = self.grids.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) \
                else None
            if seen is not None and all(a.jump == a.field == 1 for a in seen.axes):   # pixel by pixel
                return (f"{message} input_size is one image's (channels, height, width): this "
                        f"layer takes {channels} channels, e.g. input_size=({channels}, "
                        f"{self.image[0]}, {self.image[1]}).")
            return f"{message} It takes {channels} channels and gets {x.shape[-3]}."
        if isinstance(module, nn.Linear) or _name(node) == "linear":
            return (f"{message} A flattened grid's size depends on the input's: use the size the "
                    f"model was built for, or pass the part of the model before the flattening.")
        return f"{message} Use a larger input_size if the grid has shrunk below a kernel there."

    # -- one node ------------------------------------------------------------------------
    def step(self, node, kind, args, kwargs, result, ops, grids) -> _Grid | None:
        """The field of ``node``'s output, from its inputs' (``grids``); None for a size or
        a dtype. Raises ValueError or NotImplementedError for what it cannot give."""
        if _shapes(result) is None:
            if _name(node) in METADATA:
                return None
            raise NotImplementedError(
                f"{self.where(node)} reads values of the grid as numbers, which the receptive "
                f"field cannot follow; keep the computation in tensors, or pass the part of the "
                f"model before it.")
        data = self.grids.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) \
            else None
        if kind == "spatial":
            return self.spatial(node, args, kwargs, result, data, grids)
        if all(g.single for g in grids):   # every element sees the same field
            keep = (len(grids) == 1 and data is not None and isinstance(args[0], torch.Tensor)
                    and tuple(args[0].shape) == _shapes(result))
            return _Grid(tuple(reduce(_united, axes) for axes in zip(*(g.axes for g in grids))),
                         data.dims if keep else (None, None))
        if kind in REASONS:
            raise ValueError(f"{self.where(node)} has no receptive field on the input grid: "
                             f"{REASONS[kind]}. Pass the part of the model before it.")
        if kind in ("reshape", "relabel", "split", "getitem", "linear") and (
                data is None or len(grids) > 1 and kind not in ("reshape", "getitem")):
            raise NotImplementedError(f"{self.where(node)} takes the grid other than as its first "
                                      f"input, which the calculator does not follow.")
        if kind == "relabel":
            sources = _sources(node, args, kwargs)
            if sources is not None:
                return self.relabelled(data, sources)
        handlers = {"reshape": self.reshaped, "split": self.split, "getitem": self.indexed,
                    "linear": self.linear}
        if kind in handlers:
            return handlers[kind](node, args, result, data)
        if kind in ("join", "norm") or self.elementwise(node, args, kwargs, result, ops, grids):
            return self.joined(node, result, grids)
        raise NotImplementedError(
            f"Don't know the receptive field of {self.where(node)}: it is neither elementwise, nor "
            f"a reshape or permute that keeps the height and width axes, nor a convolution or "
            f"pooling the calculator knows. Pass the part of the model before it, or write it "
            f"with nn.Conv2d, nn.MaxPool2d or nn.AvgPool2d if it is one.")

    def spatial(self, node, args, kwargs, result, data, grids) -> _Grid:
        """A convolution or pooling: the recurrence, on the axes it slides over."""
        if data is None or len(grids) > 1:
            raise NotImplementedError(f"{self.where(node)} computes its weights from the input, "
                                      f"which the calculator does not follow.")
        in_shape = tuple(args[0].shape)
        out_shape = _shapes(result)
        out_shape = out_shape[0] if isinstance(out_shape, list) else out_shape
        in_size, out_size = in_shape[-2:], out_shape[-2:]
        geometry = (_module_geometry(self.modules[node.target], in_size, out_size, self.where(node))
                    if node.op == "call_module" else
                    _function_geometry(_name(node), args, kwargs, in_size, out_size, self.where(node)))
        axes, dims = [], []
        for i, (axis, dim) in enumerate(zip(data.axes, data.dims)):
            if dim is None:
                axes.append(axis)
                dims.append(None)
                continue
            slot = dim - (len(in_shape) - 2)
            if slot not in (0, 1):
                raise ValueError(
                    f"{self.where(node)} slides over the tensor's last two axes, but the image's "
                    f"{AXES[i]} is axis {dim} of its input {in_shape}: permute back to (batch, "
                    f"channels, height, width) before it.")
            axes.append(axis.through(*(g[slot] for g in geometry), out_size[slot]))
            dims.append(len(out_shape) - 2 + slot)
        self.rows.append(_row(self.label(node), axes, geometry))
        return _Grid(tuple(axes), tuple(dims))

    def relabelled(self, data: _Grid, sources) -> _Grid:
        """A permute (axes move) or a reduction (reduced axes collapse to one unit)."""
        axes, dims = [], []
        for axis, dim in zip(data.axes, data.dims):
            moved = sources.index(dim) if dim is not None and dim in sources else None
            axes.append(axis if moved is not None or dim is None else _collapsed(axis))
            dims.append(moved)
        return _Grid(tuple(axes), tuple(dims))

    def reshaped(self, node, args, result, data) -> _Grid:
        """A reshape: keeps each axis it leaves intact; flattening to (batch, features)
        collapses the grid; merging height or width into another axis has no field."""
        in_shape, out_shape = tuple(args[0].shape), tuple(result.shape)
        dims = [None if d is None else _kept(in_shape, out_shape, d) for d in data.dims]
        lost = [i for i, (a, d) in enumerate(zip(data.axes, dims)) if d is None and a.size > 1]
        if not lost:
            return _Grid(data.axes, tuple(dims))
        if len(out_shape) <= 2:
            return _Grid(tuple(_collapsed(a) for a in data.axes), (None, None))
        axis = lost[0]
        raise ValueError(
            f"{self.where(node)} reshapes {in_shape} into {out_shape}, which does not keep the "
            f"image's {AXES[axis]} ({data.axes[axis].size} units) as an axis of its own: the input "
            f"grid ends there. Pass the part of the model before it, or flatten to (batch, "
            f"features) (nn.Flatten) if every later output combines all of it.")

    def split(self, node, args, result, data) -> _Grid:
        """chunk, split: each part keeps the grid, unless it splits height or width."""
        in_shape = tuple(args[0].shape)
        for shape in _shapes(result):
            for i, dim in enumerate(data.dims):
                if dim is not None and (len(shape) != len(in_shape) or shape[dim] != in_shape[dim]):
                    raise ValueError(f"{self.where(node)} splits the image's {AXES[i]} into parts, "
                                     f"each a grid of its own: pass the part of the model before it.")
        return data

    def indexed(self, node, args, result, data) -> _Grid:
        """Indexing: a part of a tuple keeps its grid; indexing a tensor keeps the axes it takes
        whole, crops or strides those it slices (a kernel of 1) and takes one unit of those it
        indexes with an integer."""
        if not isinstance(args[0], torch.Tensor):
            return data
        places = _index_places(args[1], args[0].ndim)
        if places is None:
            raise NotImplementedError(f"{self.where(node)} indexes the grid with a tensor or a list, "
                                      f"which the calculator does not follow.")
        axes, dims, strides, crops = list(data.axes), list(data.dims), [1, 1], [0, 0]
        for i, dim in enumerate(data.dims):
            if dim is None:
                continue
            item, out = places[dim]
            n, a = args[0].shape[dim], data.axes[i]
            first, _, step = item.indices(n) if isinstance(item, slice) else (item % n, 0, 1)
            axes[i] = a.through(1, step, -first, 1, 1 if out is None else result.shape[out])
            dims[i], strides[i], crops[i] = out, step, -first
        if axes != list(data.axes):   # a crop is a padding below 0
            self.rows.append(_row(self.label(node), axes, ((1, 1), strides, crops, (1, 1))))
        return _Grid(tuple(axes), tuple(dims))

    def linear(self, node, args, result, data) -> _Grid:
        """A Linear acts on the last axis: if that is height or width, every output sees all
        of it (one unit)."""
        last = args[0].ndim - 1
        return _Grid(tuple(_collapsed(a) if d == last else a for a, d in zip(data.axes, data.dims)),
                     tuple(None if d == last else d for d in data.dims))

    def elementwise(self, node, args, kwargs, result, ops, grids) -> bool:
        """Whether the operation acts on each position alone: every ATen operation it runs is
        pointwise, or (one input grid) on a random input it gives at a pixel alone what it gives
        there on the whole grid."""
        if all(_pointwise(op) for op in ops):
            return True
        places = [i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and a in self.grids]
        if len(grids) != 1 or places != [0] or _shapes(result) != tuple(args[0].shape) \
                or node.kwargs and any(isinstance(v, fx.Node) and v in self.grids
                                       for v in node.kwargs.values()):
            return False
        return _acts_per_position(self.call(node, args, kwargs), args[0], grids[0].dims)

    def call(self, node, args, kwargs):
        """``node``'s operation as a function of its first input."""
        if node.op == "call_module":
            return lambda x: self.modules[node.target](x, *args[1:], **kwargs)
        if node.op == "call_method":
            return lambda x: getattr(x, node.target)(*args[1:], **kwargs)
        return lambda x: node.target(x, *args[1:], **kwargs)

    def joined(self, node, result, grids) -> _Grid:
        """Paths meeting position by position (broadcasting, as in PyTorch): the union of their
        fields; a path of one unit broadcast onto a grid must see the whole input (global)."""
        out_shape = tuple(result.shape)
        inputs = [(self.grids[a], self.env[a].ndim) for a in node.all_input_nodes
                  if a in self.grids and isinstance(self.env[a], torch.Tensor)]
        axes, dims = [], []
        for i in range(2):
            members, shared = [], []
            for grid, ndim in inputs:
                axis, dim = grid.axes[i], grid.dims[i]
                dim = None if dim is None else dim + len(out_shape) - ndim
                if dim is not None and out_shape[dim] == axis.size:
                    members.append((axis, dim))
                elif axis.size == 1:
                    shared.append(axis)
                else:
                    raise ValueError(f"{self.where(node)} joins grids of {axis.size} and "
                                     f"{out_shape[dim]} units along the image's {AXES[i]}: "
                                     f"concatenate along channels, or pass the part before it.")
            if len({d for _, d in members}) > 1:
                raise ValueError(f"{self.where(node)} joins tensors whose {AXES[i]} axes are at "
                                 f"different places: permute them to one layout first.")
            if not members:
                axes.append(reduce(_united, shared))
                dims.append(None)
                continue
            axis = reduce(lambda a, b: self.united(node, a, b, i), [a for a, _ in members])
            for s in shared:
                axis = self.gated(node, axis, s, i)
            axes.append(axis)
            dims.append(members[0][1])
        return _Grid(tuple(axes), tuple(dims))

    def united(self, node, a: _Axis, b: _Axis, i: int) -> _Axis:
        if a.jump != b.jump and a.size > 1:
            raise ValueError(
                f"{self.where(node)} joins paths whose units along the image's {AXES[i]} are "
                f"{a.jump} and {b.jump} input pixels apart, so the units it joins see fields "
                f"that do not line up: pass the part of the model before it.")
        return _united(a, b)

    def gated(self, node, axis: _Axis, shared: _Axis, i: int) -> _Axis:
        """A grid joined with one unit broadcast over it: every unit then sees the whole input,
        if that unit does."""
        n = self.image[i]
        low, high = shared.span()
        if shared.whole or (low <= 0 and high >= n - 1):
            return replace(axis, field=n, whole=True)
        raise ValueError(
            f"{self.where(node)} broadcasts onto a grid a path that sees input pixels {low:g} to "
            f"{high:g} only (of 0 to {n - 1} along the image's {AXES[i]}), so its units see "
            f"fields of different shapes: pool that path over the whole grid, or pass the part "
            f"of the model before it.")


def _acts_per_position(function, x: torch.Tensor, dims) -> bool:
    """Whether ``function`` gives, on a random input like ``x``, at two pixels alone (a
    corner and the centre) what it gives there on the whole grid."""
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(x.shape, generator=generator).to(x) if x.is_floating_point() else x.clone()
    try:
        whole = function(probe.clone())
        for where in ("corner", "centre"):
            part, crop = probe, whole
            for dim in (d for d in dims if d is not None):
                at = 0 if where == "corner" else x.shape[dim] // 2
                part, crop = part.narrow(dim, at, 1), crop.narrow(dim, at, 1)
            alone = function(part.clone())
            if alone.shape != crop.shape or not torch.allclose(alone, crop, rtol=1e-4, atol=1e-5):
                return False
    except (RuntimeError, TypeError, ValueError, IndexError):
        return False
    return True


def _checked(input_size) -> tuple[int, int, int]:
    size = tuple(input_size) if isinstance(input_size, (tuple, list, torch.Size)) else (input_size,)
    if len(size) != 3 or not all(isinstance(n, int) and n > 0 for n in size):
        raise ValueError(f"input_size is one image's (channels, height, width), e.g. (3, 32, 32), "
                         f"without the batch dimension; got {size}.")
    return size


def receptive_field(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)
                    ) -> pd.DataFrame:
    """Layer-by-layer receptive-field table of ``model`` for inputs (C, H, W).

    One row per convolution and pooling layer (a layer that changes the grid or the field),
    in execution order, and a last row ``output`` for the network's output. Columns:
    ``layer`` (module name, or function within it), ``kernel``, ``stride``, ``padding``,
    ``dilation`` (of the layer), ``jump`` (cumulative stride, input pixels between
    neighbouring units), ``receptive_field`` (input pixels), ``global`` (True where every unit
    sees the whole input, through a path pooled over the whole grid: the field is then the
    input's size), ``output_size`` (units per axis), ``start`` (input coordinate of the centre
    of the first unit). Square values are shown as one number, others as ``(height, width)``;
    the ``output`` row leaves the layer columns empty.

    Raises:
        ValueError: ``input_size`` is not (C, H, W) or does not pass through the model (the
            message says which layer, and what to change), or a layer has no receptive field
            on the input grid (the message names it and says why).
        NotImplementedError: an operation the calculator does not know (named), or a forward
            that torch.fx cannot trace (a branch on the data).
    """
    input_size = _checked(input_size)
    was_training = model.training
    model.eval()   # the field in evaluation: dropout and stochastic depth off
    try:
        try:
            graph_module = fx.GraphModule(model, _Tracer().trace(model))
        except fx.proxy.TraceError as error:
            raise NotImplementedError(
                f"receptive_field traces the model with torch.fx, which cannot follow "
                f"{type(model).__name__}.forward ({error}): a forward that branches on the data "
                f"has no single receptive field; pass the part of the model without it.") from error
        walk = _Walk(graph_module, type(model).__name__, input_size)
        like = next((p for p in model.parameters() if p.is_floating_point()), torch.zeros(()))
        with torch.no_grad():
            walk.run(torch.zeros(1, *input_size, dtype=like.dtype, device=like.device))
    finally:
        model.train(was_training)
    return pd.DataFrame(walk.rows, columns=COLUMNS, dtype=object)


def _row(name: str, axes, geometry) -> dict:
    def show(pair):
        return pair[0] if pair[0] == pair[1] else tuple(pair)

    kernel, stride, padding, dilation = geometry or (("", ""),) * 4
    return {"layer": name, "kernel": show(kernel), "stride": show(stride),
            "padding": show(padding), "dilation": show(dilation),
            "jump": show([a.jump for a in axes]), "receptive_field": show([a.field for a in axes]),
            "global": show([a.whole for a in axes]), "output_size": show([a.size for a in axes]),
            "start": show([a.start for a in axes])}
