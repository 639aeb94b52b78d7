"""Normalization layers chosen by name, and from-scratch reference implementations.

Every scheme normalizes a feature map ``x`` of shape (N, C, H, W) as

    y = (x - mean) / sqrt(var + eps) * gamma + beta

and differs only in the set of axes the mean and variance are taken over
(Wu & He 2018, Eq. 1-2 and Figure 2):

=========  ==========================  ==========================================
scheme     statistics over             paper
=========  ==========================  ==========================================
batch      (N, H, W), per channel      Ioffe & Szegedy 2015, Algorithm 1
layer      (C, H, W), per sample       Ba, Kiros & Hinton 2016, Eq. 3-4
group      (C/G, H, W), per group      Wu & He 2018, Eq. 1-3
instance   (H, W), per sample/channel  Ulyanov, Vedaldi & Lempitsky 2016, Eq. 2
=========  ==========================  ==========================================

``gamma`` and ``beta`` (the affine parameters) are per channel, shape (C,), in all four.

:func:`make_norm` builds the ``torch.nn`` layer for a name; the functions
:func:`batch_norm`, :func:`group_norm`, :func:`layer_norm` and :func:`instance_norm`
spell the same computations out in plain tensor operations, for reading; the tests check
them against ``torch.nn.functional``.
"""

from __future__ import annotations

import torch
from torch import nn

#: Canonical normalization names, in the order the book presents them.
NORM_NAMES = ("batch", "layer", "group", "instance", "none")
#: Readable names, for tables, legends and titles.
NORM_LABELS = {"batch": "BatchNorm", "layer": "LayerNorm", "group": "GroupNorm",
               "instance": "InstanceNorm", "none": "no norm"}

#: Default group count for ``group``. Wu & He (2018, Table 3) find 16-32 groups best on
#: ResNet-50, whose layers have 64-2048 channels; our layers have 16-64, so 4 groups keeps
#: 4-16 channels in each group (Section 4.1 of the paper: "channels per group" matters).
DEFAULT_GROUPS = 4

_ALIASES = {
    "batch": "batch", "bn": "batch", "batchnorm": "batch", "batchnorm2d": "batch",
    "layer": "layer", "ln": "layer", "layernorm": "layer",
    "group": "group", "gn": "group", "groupnorm": "group",
    "instance": "instance", "in": "instance", "instancenorm": "instance",
    "instancenorm2d": "instance",
    "none": "none", "identity": "none", "no": "none",
}


def canonical_norm(name: str) -> str:
    """Return the canonical name (one of :data:`NORM_NAMES`) for a spelling of a norm.

    Accepts the usual spellings, case-insensitively: ``"batch"``, ``"BatchNorm"``,
    ``"batch_norm"``, ``"bn"``, ``"GroupNorm"``, ``"gn"``, ...

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
    """
    key = str(name).lower().replace("_", "").replace("-", "").replace(" ", "")
    key = _ALIASES.get(key) or _ALIASES.get(key.removesuffix("norm"))
    if key is None:
        raise ValueError(
            f"Unknown value {name!r} for argument norm. Valid values are "
            f"{', '.join(NORM_NAMES)} (or spellings such as 'BatchNorm', 'gn')."
        )
    return key


class _Relayout(torch.autograd.Function):
    """Copy x to memory format ``to``; its gradient is copied back to format ``back``, the
    format of x, so that the layers before see the layout they produce (a kernel that
    gets its inputs in two formats is slow)."""

    @staticmethod
    def forward(ctx, x, to: torch.memory_format, back: torch.memory_format):
        ctx.back = back
        return x.contiguous(memory_format=to)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=ctx.back), None, None


class GroupNorm(nn.GroupNorm):
    """:class:`torch.nn.GroupNorm` that normalizes channels_last input in NCHW on the CPU.

    PyTorch's CPU kernel for channels_last group norm with more than one group is slow
    (each group's channels are a strided slice at every pixel); copying to NCHW and back,
    gradient included, makes the network's training step faster
    (``benchmarks/norm_speed.py``). Same computation, parameters and state dict as
    :class:`torch.nn.GroupNorm`, up to rounding. Input and output shape: (N, C, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or self.num_groups == 1
                or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        nchw, nhwc = torch.contiguous_format, torch.channels_last
        y = super().forward(_Relayout.apply(x, nchw, nhwc))
        return _Relayout.apply(y, nhwc, nchw)


def make_norm(name: str, num_channels: int, groups: int = DEFAULT_GROUPS) -> nn.Module:
    """Build the normalization layer ``name`` for ``num_channels`` channels.

    Input and output shape: (N, C, H, W) with C = ``num_channels``.

    - ``batch``: :class:`torch.nn.BatchNorm2d` (running statistics for evaluation).
    - ``layer``: :class:`torch.nn.GroupNorm` with one group. This is layer norm over
      (C, H, W) with a per-channel affine (2C parameters), as Wu & He (2018) define it for
      convolutional maps. ``nn.LayerNorm([C, H, W])`` normalizes over the same axes, but
      its affine parameters have shape (C, H, W): 2CHW parameters, tied to one image size.
    - ``group``: :class:`GroupNorm` (:class:`torch.nn.GroupNorm`, run in the layout its
      CPU kernel is fast in) with ``groups`` groups of C/groups channels.
    - ``instance``: :class:`torch.nn.InstanceNorm2d` with a per-channel affine and no
      running statistics (the same computation in training and evaluation).
    - ``none``: :class:`torch.nn.Identity`.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names), or for ``group``
            a group count that does not divide ``num_channels`` (the message lists the
            group counts that do).
    """
    norm = canonical_norm(name)
    if norm == "batch":
        return nn.BatchNorm2d(num_channels)
    if norm == "layer":
        return nn.GroupNorm(1, num_channels)
    if norm == "group":
        if groups < 1 or num_channels % groups:
            valid = [g for g in range(1, num_channels + 1) if num_channels % g == 0]
            raise ValueError(
                f"groups={groups} does not divide num_channels={num_channels}: GroupNorm "
                f"needs an equal number of channels per group. Valid group counts for "
                f"{num_channels} channels are {valid}."
            )
        return GroupNorm(groups, num_channels)
    if norm == "instance":
        return nn.InstanceNorm2d(num_channels, affine=True)
    return nn.Identity()


# --------------------------------------------------------------------------------------
# From-scratch reference implementations (for teaching; the model uses torch.nn layers).
# --------------------------------------------------------------------------------------


def _affine(x_hat: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None):
    """Apply the per-channel scale ``weight`` (C,) and shift ``bias`` (C,) to (N, C, H, W)."""
    if weight is not None:
        x_hat = x_hat * weight[None, :, None, None]
    if bias is not None:
        x_hat = x_hat + bias[None, :, None, None]
    return x_hat


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Batch normalization of x (N, C, H, W) (Ioffe & Szegedy 2015, Algorithm 1).

    Training: the mean and the biased variance are taken per channel over (N, H, W), and
    the running statistics (C,) are updated in place as
    ``running = (1 - momentum) * running + momentum * batch_stat``, where the running
    variance uses the unbiased batch variance (factor m / (m - 1), m = N*H*W), as
    ``torch.nn.BatchNorm2d`` does.
    Evaluation: the running statistics replace the batch statistics, so each sample is
    normalized independently of the rest of the batch.

    Returns a tensor of the shape of ``x``.
    """
    if training:
        mean = x.mean(dim=(0, 2, 3))                                # (C,)
        var = x.var(dim=(0, 2, 3), unbiased=False)                  # (C,)
        if running_mean is not None and running_var is not None:
            m = x.numel() // x.shape[1]
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * m / (m - 1))
    else:
        mean, var = running_mean, running_var
    x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + eps)
    return _affine(x_hat, weight, bias)


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Group normalization of x (N, C, H, W) (Wu & He 2018, Eq. 1-3 and Figure 3).

    The C channels are split into ``num_groups`` groups of C/G consecutive channels; the
    mean and the biased variance are taken per sample and group, over (C/G, H, W). The
    same computation is done in training and in evaluation: there are no running
    statistics. Returns a tensor of the shape of ``x``.
    """
    n, c, h, w = x.shape
    xg = x.reshape(n, num_groups, c // num_groups, h, w)            # (N, G, C/G, H, W)
    mean = xg.mean(dim=(2, 3, 4), keepdim=True)                     # (N, G, 1, 1, 1)
    var = xg.var(dim=(2, 3, 4), unbiased=False, keepdim=True)       # (N, G, 1, 1, 1)
    x_hat = ((xg - mean) / torch.sqrt(var + eps)).reshape(n, c, h, w)
    return _affine(x_hat, weight, bias)


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalization of x (N, C, H, W) over (C, H, W), per sample (Ba et al. 2016).

    Group norm with one group; ``weight`` and ``bias`` are per channel, shape (C,).
    """
    return group_norm(x, 1, weight, bias, eps)


def instance_norm(x, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """Instance normalization of x (N, C, H, W) over (H, W), per sample and channel
    (Ulyanov et al. 2016). Group norm with C groups of one channel each."""
    return group_norm(x, x.shape[1], weight, bias, eps)
