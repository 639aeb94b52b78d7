"""The CIFAR-10 network: ``C1 C2 c3 P1 C4 C5 C6 c7 P2 C8 C9 C10 GAP c11``.

- C: a 3x3 convolution block, convolution -> ReLU -> normalization (the assignment's
  order; ``order="conv-norm-relu"`` gives the more common order of He et al. 2016);
- c3, c7: 1x1 convolutions that set the channels before each max-pool ("transition"
  layers: with :data:`WIDTHS` c3 reduces 32 to 16, c7 widens 24 to 32); c11: a 1x1
  convolution from the last features to the 10 class scores;
- P: 2x2 max-pool, stride 2; GAP: global average pooling (:class:`GlobalAvgPool2d`).

Without normalization (``norm="none"``) the 3x3 convolutions get biases: a normalization
subtracts means of its input and adds its own shift, which makes a bias before it
redundant (exactly for batch and instance norm; for layer and group norm all but the part
that differs within a group), but without one the bias is the layer's only offset. The
norms that subtract no mean (``frn``, ``rms-group``) do not cancel a bias, but their
convolutions have none either: each replaces batch or group norm in the same network,
parameter for parameter apart from FRN's threshold, so that the comparison changes the
normalization alone (FRN's shift and threshold are its offsets: Singh & Krishnan 2020 put
it in the place of batch norm, after convolutions without bias). With
``weight_standardization`` they standardize their weights (:class:`StandardizedConv2d`).

"Add one layer to another": in the second and third stages the output of the first block
(C4, C8) is added to the output of the two blocks after it (C6, C10), a residual
connection (He et al. 2016) wrapped in :class:`Residual` so that it shows in the module
tree and in the torchinfo summary::

    x -> C1 -> C2 -> c3 -> P1 -> C4 -+-> C5 -> C6 -(+)-> c7 -> P2 -> C8 -+-> C9 -> C10 -(+)-> GAP -> c11
                                     '------------'                      '-------------'

Shapes for a (N, 3, 32, 32) input: 32x32 until P1, 16x16 until P2, 8x8 until GAP;
the output is (N, 10) logits.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .norms import DEFAULT_GROUPS, canonical_norm, make_norm

#: Parameter budget of the assignment: fewer than 50,000 trainable parameters.
MAX_PARAMS = 50_000

#: Channel widths (C1, C2, c3, stage 2, c7, stage 3). Chosen on measured accuracy within
#: the budget: cheap narrow layers at 32x32, most parameters at 8x8 where they cost least
#: compute (see the book's chapter on the network).
WIDTHS = (16, 32, 16, 24, 32, 32)

ORDERS = ("conv-relu-norm", "conv-norm-relu")


class StandardizedConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` whose weights are standardized before use: each output
    channel's weights (C_in / groups * kH * kW values) minus their mean, divided by
    ``sqrt(variance + eps)``. Weight Standardization, Qiao et al. 2019, Eq. 5; meant for
    layers followed by group or layer norm. Same shapes and parameters as Conv2d."""

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3), correction=0, keepdim=True)
        return self._conv_forward(x, (w - mean) / torch.sqrt(var + self.eps), self.bias)


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """Global average pooling, (N, C, H, W) -> (N, C, 1, 1): ``nn.AdaptiveAvgPool2d(1)``
    computed as one H x W average pool, whose backward keeps the channels_last layout
    (AdaptiveAvgPool2d's hands the last stage's layers NCHW gradients to relayout)."""

    def __init__(self):
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, x.shape[-2:])


class ConvBlock(nn.Sequential):
    """3x3 convolution (padding 1), ReLU and normalization, in ``order``. The convolution
    has a bias only without normalization (``norm="none"``), and standardizes its weights
    with ``weight_standardization`` (:class:`StandardizedConv2d`).

    With ``norm="frn"`` the normalization is :class:`normlab.norms.FilterResponseNorm2d`,
    whose TLU ``max(y, tau)`` is an activation of its own; the block keeps its ReLU all the
    same: conv -> ReLU -> FRN + TLU (default order), or conv -> FRN + TLU -> ReLU, which is
    the paper's conv -> FRN -> TLU with the threshold floored at 0 (``max(max(y, tau), 0) =
    max(y, max(tau, 0))``).

    (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch",
                 groups: int = DEFAULT_GROUPS, order: str = "conv-relu-norm",
                 weight_standardization: bool = False):
        if order not in ORDERS:
            raise ValueError(f"Unknown value {order!r} for argument order. "
                             f"Valid values are {', '.join(ORDERS)}.")
        conv_type = StandardizedConv2d if weight_standardization else nn.Conv2d
        conv = conv_type(in_channels, out_channels, 3, padding=1,
                         bias=canonical_norm(norm) == "none")
        layers = [("conv", conv), ("relu", nn.ReLU(inplace=True)),
                  ("norm", make_norm(norm, out_channels, groups))]
        if order == "conv-norm-relu":
            layers[1], layers[2] = layers[2], layers[1]
        super().__init__(OrderedDict(layers))


class Residual(nn.Module):
    """``x + body(x)``: adds the input of ``body`` to its output (He et al. 2016).

    The body must keep the shape: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (elements of tensors with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Net(nn.Sequential):
    """The book's network; see the module docstring for the layout.

    Args:
        norm: normalization name (see :func:`normlab.make_norm`): ``batch``, ``layer``,
            ``group``, ``instance``, ``none``, ``frn`` (Filter Response Normalization with
            its TLU), ``rms-group`` (group norm without centering) or ``batch-renorm``
            (Batch Renormalization, rmax=3, dmax=5).
        groups: group count for ``group`` and ``rms-group`` norm; must divide every width.
        widths: channels of (C1, C2, c3, C4-C6, c7, C8-C10).
        residual: add the residual connections of stages 2 and 3.
        order: ``conv-relu-norm`` (assignment) or ``conv-norm-relu``.
        weight_standardization: standardize the 3x3 convolutions' weights
            (:class:`StandardizedConv2d`, Qiao et al. 2019).
        num_classes: outputs of c11.
        max_params: trainable-parameter budget; ``None`` lifts it.

    Input (N, 3, H, W), any H, W divisible by 4 (32 for CIFAR-10); output (N, num_classes).

    Raises:
        ValueError: unknown norm or order, groups not dividing a width, or more
            trainable parameters than ``max_params``.
    """

    def __init__(self, norm: str = "batch", groups: int = DEFAULT_GROUPS,
                 widths: tuple[int, ...] = WIDTHS, residual: bool = True,
                 order: str = "conv-relu-norm", weight_standardization: bool = False,
                 num_classes: int = 10, max_params: int | None = MAX_PARAMS):
        norm = canonical_norm(norm)
        w1, w2, w3, w4, w7, w8 = widths

        def block(cin, cout):
            return ConvBlock(cin, cout, norm, groups, order, weight_standardization)

        def stage(first, second, third):
            body = nn.Sequential(OrderedDict([second, third]))
            return [first, (f"{second[0]}_{third[0]}", Residual(body) if residual else body)]

        layers = [
            ("C1", block(3, w1)), ("C2", block(w1, w2)),
            ("c3", nn.Conv2d(w2, w3, 1, bias=False)), ("P1", nn.MaxPool2d(2)),
            *stage(("C4", block(w3, w4)), ("C5", block(w4, w4)), ("C6", block(w4, w4))),
            ("c7", nn.Conv2d(w4, w7, 1, bias=False)), ("P2", nn.MaxPool2d(2)),
            *stage(("C8", block(w7, w8)), ("C9", block(w8, w8)), ("C10", block(w8, w8))),
            ("GAP", GlobalAvgPool2d()),
            ("c11", nn.Conv2d(w8, num_classes, 1)),
            ("flatten", nn.Flatten()),
        ]
        super().__init__(OrderedDict(layers))
        self.norm, self.groups, self.widths = norm, groups, tuple(widths)
        self.weight_standardization = weight_standardization
        n = count_parameters(self)
        if max_params is not None and n >= max_params:
            raise ValueError(
                f"Net(norm={norm!r}, widths={tuple(widths)}) has {n:,} trainable "
                f"parameters, over the budget of fewer than {max_params:,}. Use smaller "
                f"widths, or pass max_params=None to lift the budget."
            )
