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

Three later schemes change one piece of that formula each:

============  ==========================  ==============================================
scheme        statistics over             what changes
============  ==========================  ==============================================
frn           (H, W), per sample/channel  no mean: x / sqrt(mean(x^2) + eps), then a
                                          learned threshold max(y, tau) (TLU); Singh &
                                          Krishnan 2020, Eq. 1-4
rms-group     (C/G, H, W), per group      no mean: x / sqrt(mean(x^2) + eps), group
                                          norm's axes ("does the mean matter?"; one
                                          group is RMSNorm, Zhang & Sennrich 2019)
batch-renorm  (N, H, W), per channel      batch norm whose training output is corrected
                                          towards the running statistics (r, d); Ioffe
                                          2017, Algorithm 1
============  ==========================  ==============================================

:func:`make_norm` builds the ``torch.nn`` layer for a name; the functions
:func:`batch_norm`, :func:`group_norm`, :func:`layer_norm`, :func:`instance_norm`,
:func:`filter_response_norm`, :func:`rms_group_norm` and :func:`batch_renorm` spell the
same computations out in plain tensor operations, for reading; the tests check them
against ``torch.nn.functional`` where it has the computation, against the papers'
formulas where it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Canonical normalization names, in the order the book presents them: the four of Wu & He
#: (2018) and none, then the later schemes (Filter Response Normalization, RMS group norm,
#: Batch Renormalization).
NORM_NAMES = ("batch", "layer", "group", "instance", "none", "frn", "rms-group", "batch-renorm")
#: Readable names, for tables, legends and titles.
NORM_LABELS = {"batch": "BatchNorm", "layer": "LayerNorm", "group": "GroupNorm",
               "instance": "InstanceNorm", "none": "no norm", "frn": "FRN + TLU",
               "rms-group": "RMS GroupNorm", "batch-renorm": "BatchRenorm"}

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
    "frn": "frn", "filterresponse": "frn", "filterresponsenorm2d": "frn",
    "filterresponsenormalization": "frn", "frntlu": "frn", "frn+tlu": "frn",
    "rmsgroup": "rms-group", "rmsgn": "rms-group", "rmsgroupnorm": "rms-group",
    "batchrenorm": "batch-renorm", "brn": "batch-renorm", "batchrenorm2d": "batch-renorm",
    "batchrenormalization": "batch-renorm", "renorm": "batch-renorm",
}


def canonical_norm(name: str) -> str:
    """Return the canonical name (one of :data:`NORM_NAMES`) for a spelling of a norm.

    Accepts the usual spellings, case-insensitively: ``"batch"``, ``"BatchNorm"``,
    ``"batch_norm"``, ``"bn"``, ``"GroupNorm"``, ``"gn"``, ``"FilterResponseNorm"``,
    ``"RMSGroupNorm"``, ``"BatchRenorm"``, ``"brn"``, ...

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


def _check_groups(groups: int, num_channels: int, layer: str) -> None:
    """Raise ValueError, listing the valid group counts, unless ``groups`` divides
    ``num_channels``."""
    if groups < 1 or num_channels % groups:
        valid = [g for g in range(1, num_channels + 1) if num_channels % g == 0]
        raise ValueError(
            f"groups={groups} does not divide num_channels={num_channels}: {layer} "
            f"needs an equal number of channels per group. Valid group counts for "
            f"{num_channels} channels are {valid}."
        )


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or in its own dtype where that is wider (float64): the statistics of
    bf16 or fp16 activations (autocast) are taken in fp32, as PyTorch's norm kernels do."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class FilterResponseNorm2d(nn.Module):
    """Filter Response Normalization with its Thresholded Linear Unit (Singh & Krishnan 2020).

    Per sample and channel, over (H, W): ``nu2 = mean(x^2)`` (Eq. 1), ``y = gamma *
    x / sqrt(nu2 + eps) + beta`` (Eq. 2-3), ``z = max(y, tau)`` (TLU, Eq. 4). No mean is
    subtracted: the threshold ``tau`` gives the activation the offset that centering would
    have removed. Computed by :func:`filter_response_norm`, in fp32 for bf16 or fp16 input
    (autocast); the output has the input's dtype. No running statistics: the same
    computation in training and evaluation, independent of the rest of the batch.

    Parameters (all (C,), 3C in all): ``weight`` (gamma, ones), ``bias`` (beta, zeros),
    ``tau`` (zeros), the paper's initialization; with ``learnable_eps`` one more, the scalar
    ``eps_learned`` (1,).

    ``eps``: 1e-6, the paper's. The paper makes eps learnable where a map has few
    pixels (at 1 x 1, ``x / sqrt(x^2 + eps)`` is nearly the sign of x, whose gradient
    vanishes); the book's maps are 8 x 8 to 32 x 32, so eps is fixed by default. With
    ``learnable_eps=True`` the layer uses ``eps + |eps_learned|``, ``eps_learned``
    initialized to 1e-4, as TensorFlow Addons' ``FilterResponseNormalization`` does.

    In the book's network (:class:`normlab.ConvBlock`) the layer takes the place of the
    other norms, and the block keeps its ReLU: conv -> ReLU -> FRN + TLU in the default
    order (the TLU then acts on an affine map of non-negative input), conv -> FRN + TLU ->
    ReLU with ``order="conv-norm-relu"``, where the ReLU after the TLU computes
    ``max(y, max(tau, 0))``: the paper's conv -> FRN -> TLU with the threshold floored at 0.

    Input and output shape: (N, C, H, W) with C = ``num_channels``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, learnable_eps: bool = False):
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.tau = nn.Parameter(torch.zeros(num_channels))
        self.eps_learned = nn.Parameter(torch.full((1,), 1e-4)) if learnable_eps else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.eps_learned is None else self.eps + self.eps_learned.abs()
        z = filter_response_norm(_at_least_fp32(x), self.weight, self.bias, self.tau, eps)
        return z.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, eps={self.eps}"
                + (", learnable_eps=True" if self.eps_learned is not None else ""))


class RMSGroupNorm(nn.Module):
    """Group norm without centering: each sample's channels in ``groups`` groups of C/G
    consecutive channels, each group divided by its root mean square over (C/G, H, W),
    ``y = x / sqrt(mean(x^2) + eps) * gamma + beta``, with a per-channel affine.

    The mean square is the variance plus the squared mean, so this differs from
    :class:`torch.nn.GroupNorm` only in keeping the mean: the question "does the mean
    matter?". With ``groups=1`` it is RMSNorm (Zhang & Sennrich 2019, Eq. 4) over (C, H, W)
    with a shift ``beta`` added and per-channel, not per-element, parameters; with
    ``groups=C`` it is Filter Response Normalization without its TLU. Computed by
    :func:`rms_group_norm`, in fp32 for bf16 or fp16 input (autocast); the output has the
    input's dtype. No running statistics.

    Parameters: ``weight`` (gamma, ones) and ``bias`` (beta, zeros), (C,) each. ``eps``
    1e-5, :class:`torch.nn.GroupNorm`'s, so that only the centering differs from it.

    Input and output shape: (N, C, H, W) with C = ``num_channels``.

    Raises:
        ValueError: ``groups`` does not divide ``num_channels`` (the message lists the
            group counts that do).
    """

    def __init__(self, num_channels: int, groups: int = DEFAULT_GROUPS, eps: float = 1e-5):
        super().__init__()
        _check_groups(groups, num_channels, "RMSGroupNorm")
        self.num_channels, self.groups, self.eps = num_channels, groups, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rms_group_norm(_at_least_fp32(x), self.groups, self.weight, self.bias, self.eps)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.groups}, eps={self.eps}"


@dataclass(frozen=True)
class RenormSchedule:
    """Limits ``(rmax, dmax)`` of Batch Renormalization for a training step, relaxed as in
    Ioffe (2017)'s experiments: ``rmax = 1`` and ``dmax = 0`` (plain batch norm) for the
    first ``start`` steps, then rising to ``rmax`` at step ``r_end`` and to ``dmax`` at
    step ``d_end``, constant after. The paper relaxes them "gradually"; this ramps them
    linearly. The defaults are the paper's ImageNet steps (5,000, 40,000 and 25,000); a
    20-epoch run of the book at batch size 128 has 7,820 steps, so scale them to the run.
    ``step`` counts from 0."""

    start: int = 5_000
    r_end: int = 40_000
    d_end: int = 25_000
    rmax: float = 3.0
    dmax: float = 5.0

    def __call__(self, step: int) -> tuple[float, float]:
        def ramp(end: int) -> float:
            return min(max((step - self.start) / max(end - self.start, 1), 0.0), 1.0)

        return 1 + (self.rmax - 1) * ramp(self.r_end), self.dmax * ramp(self.d_end)


class BatchRenorm2d(nn.BatchNorm2d):
    """Batch Renormalization (Ioffe 2017, Algorithm 1): batch norm whose training output is
    corrected towards the running statistics, so that training computes what evaluation
    does.

    Training, per channel over (N, H, W), with the batch mean ``mu_B``, the batch standard
    deviation ``sigma_B = sqrt(var_B + eps)`` (biased variance) and the running ones ``mu``,
    ``sigma = sqrt(running_var + eps)``::

        r = clip(sigma_B / sigma, 1 / rmax, rmax)     # both constants for the gradient
        d = clip((mu_B - mu) / sigma, -dmax, dmax)    # (stop_gradient)
        y = gamma * ((x - mu_B) / sigma_B * r + d) + beta

    Where the clipping does not bind, ``y = gamma * (x - mu) / sigma + beta``: the
    evaluation output; the gradient still flows through ``mu_B`` and ``sigma_B`` as in
    batch norm. Since ``y = (x - mu_B) / sigma_B * (gamma r) + (beta + gamma d)``, the layer
    runs PyTorch's batch-norm kernel with that weight and bias (statistics accumulated in
    fp32 for bf16 or fp16 input); :func:`batch_renorm` spells it out. Evaluation:
    :class:`torch.nn.BatchNorm2d`'s, the running statistics.

    Running statistics as :class:`torch.nn.BatchNorm2d` keeps them: ``running_mean`` and
    ``running_var`` (unbiased batch variance), moved by ``momentum`` after each training
    step. (Algorithm 1 moves ``sigma`` itself, ``sigma += momentum * (sigma_B - sigma)``;
    keeping the variance makes ``rmax=1, dmax=0`` exactly batch norm, in training, running
    statistics and evaluation, and the state dict that of a BatchNorm2d.) Parameters and
    buffers: BatchNorm2d's (``weight``, ``bias`` (C,); 2C parameters); a BatchNorm2d, so
    code that finds batch-norm layers finds these.

    Limits: fixed ``rmax=3``, ``dmax=5`` by default, the values the paper relaxes them to,
    from the first step (the running statistics start at mean 0, variance 1, and catch up
    within some 1 / momentum steps). ``schedule``, a callable of the step (the batches seen
    in training so far, ``num_batches_tracked``, from 0) returning ``(rmax, dmax)``, e.g.
    :class:`RenormSchedule`, relaxes them over training as the paper does; ``rmax`` and
    ``dmax`` may also be set between steps.

    Input and output shape: (N, C, H, W) with C = ``num_channels``.

    Raises:
        ValueError: ``rmax`` below 1 or ``dmax`` below 0 (also for the limits a schedule
            returns).
    """

    def __init__(self, num_channels: int, rmax: float = 3.0, dmax: float = 5.0,
                 schedule: Callable[[int], tuple[float, float]] | None = None,
                 eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_channels, eps=eps, momentum=momentum)
        _check_limits(rmax, dmax)
        self.rmax, self.dmax, self.schedule = rmax, dmax, schedule

    def limits(self) -> tuple[float, float]:
        """``(rmax, dmax)`` for the next training step."""
        if self.schedule is None:
            return self.rmax, self.dmax
        rmax, dmax = self.schedule(int(self.num_batches_tracked))
        _check_limits(rmax, dmax)
        return rmax, dmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.running_mean is None:
            # evaluation (running statistics), or no running statistics to correct towards
            # (track_running_stats=False): batch norm's computation
            return super().forward(x)
        self._check_input_dim(x)
        r, d = renorm_correction(x, self.running_mean, self.running_var, self.eps,
                                 *self.limits())
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight * r,
                            self.bias + self.weight * d, True, factor, self.eps)

    def extra_repr(self) -> str:
        limits = (f"schedule={self.schedule}" if self.schedule is not None
                  else f"rmax={self.rmax}, dmax={self.dmax}")
        return f"{super().extra_repr()}, {limits}"


def _check_limits(rmax: float, dmax: float) -> None:
    if not rmax >= 1 or not dmax >= 0:
        raise ValueError(f"Batch Renormalization needs rmax >= 1 and dmax >= 0 (r is clipped "
                         f"to [1/rmax, rmax], d to [-dmax, dmax]; rmax=1, dmax=0 is batch "
                         f"norm), got rmax={rmax}, dmax={dmax}.")


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
    - ``frn``: :class:`FilterResponseNorm2d` with its TLU, fixed eps 1e-6 (3C parameters).
    - ``rms-group``: :class:`RMSGroupNorm` with ``groups`` groups (2C parameters).
    - ``batch-renorm``: :class:`BatchRenorm2d` with fixed limits rmax=3, dmax=5 (2C
      parameters).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names), or for ``group``
            and ``rms-group`` a group count that does not divide ``num_channels`` (the
            message lists the group counts that do).
    """
    norm = canonical_norm(name)
    if norm == "batch":
        return nn.BatchNorm2d(num_channels)
    if norm == "layer":
        return nn.GroupNorm(1, num_channels)
    if norm == "group":
        _check_groups(groups, num_channels, "GroupNorm")
        return GroupNorm(groups, num_channels)
    if norm == "instance":
        return nn.InstanceNorm2d(num_channels, affine=True)
    if norm == "frn":
        return FilterResponseNorm2d(num_channels)
    if norm == "rms-group":
        return RMSGroupNorm(num_channels, groups)
    if norm == "batch-renorm":
        return BatchRenorm2d(num_channels)
    return nn.Identity()


# --------------------------------------------------------------------------------------
# From-scratch reference implementations (for teaching; the model uses torch.nn layers,
# and the layers above, which call filter_response_norm, rms_group_norm and
# renorm_correction).
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


def filter_response_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    tau: torch.Tensor | None = None,
    eps: float | torch.Tensor = 1e-6,
) -> torch.Tensor:
    """Filter Response Normalization of x (N, C, H, W) (Singh & Krishnan 2020, Eq. 1-3),
    followed by the TLU ``max(y, tau)`` (Eq. 4) when ``tau`` (C,) is given.

    Per sample and channel, ``nu2`` is the mean of x^2 over (H, W) (no mean is subtracted),
    and ``y = x / sqrt(nu2 + eps) * weight + bias``. The same computation in training and
    evaluation. Returns a tensor of the shape of ``x``.
    """
    nu2 = x.square().mean(dim=(2, 3), keepdim=True)                  # (N, C, 1, 1)
    y = _affine(x * torch.rsqrt(nu2 + eps), weight, bias)
    return y if tau is None else torch.maximum(y, tau[None, :, None, None])


def rms_group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Group normalization of x (N, C, H, W) without centering: :func:`group_norm` with the
    mean left in. Per sample and group of C/G consecutive channels, x is divided by
    ``sqrt(mean(x^2) + eps)``, the mean taken over (C/G, H, W); ``num_groups=1`` is RMSNorm
    (Zhang & Sennrich 2019, Eq. 4) over (C, H, W). Returns a tensor of the shape of ``x``.
    """
    n, c, h, w = x.shape
    xg = x.reshape(n, num_groups, c // num_groups, h, w)            # (N, G, C/G, H, W)
    mean_square = xg.square().mean(dim=(2, 3, 4), keepdim=True)     # (N, G, 1, 1, 1)
    x_hat = (xg * torch.rsqrt(mean_square + eps)).reshape(n, c, h, w)
    return _affine(x_hat, weight, bias)


@torch.no_grad()
def renorm_correction(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                      eps: float = 1e-5, rmax: float = 3.0, dmax: float = 5.0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch Renormalization's ``r`` and ``d`` (C,) for x (N, C, H, W) (Ioffe 2017,
    Algorithm 1): ``r = clip(sigma_B / sigma, 1/rmax, rmax)``, ``d = clip((mu_B - mu) /
    sigma, -dmax, dmax)``, with the batch's mean and ``sigma_B = sqrt(var_B + eps)`` (biased
    variance) over (N, H, W), in fp32 at least, and ``sigma = sqrt(running_var + eps)``.
    Computed without gradient: the algorithm's stop_gradient."""
    var, mean = torch.var_mean(_at_least_fp32(x), dim=(0, 2, 3), correction=0)
    sigma = torch.sqrt(running_var + eps)
    r = (torch.sqrt(var + eps) / sigma).clamp(1 / rmax, rmax)
    d = ((mean - running_mean) / sigma).clamp(-dmax, dmax)
    return r, d


def batch_renorm(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    rmax: float = 3.0,
    dmax: float = 5.0,
) -> torch.Tensor:
    """Batch Renormalization of x (N, C, H, W) (Ioffe 2017, Algorithm 1).

    Training: the mean ``mu_B`` and the biased variance per channel over (N, H, W),
    ``sigma_B = sqrt(var + eps)``; from the running statistics (C,) ``mu`` and ``sigma =
    sqrt(running_var + eps)``, the corrections ``r = clip(sigma_B / sigma, 1/rmax, rmax)``
    and ``d = clip((mu_B - mu) / sigma, -dmax, dmax)``, detached (constants for the
    gradient); ``x_hat = (x - mu_B) / sigma_B * r + d``. The running statistics are then
    updated in place as :func:`batch_norm` does (unbiased variance). ``rmax=1, dmax=0``
    is :func:`batch_norm`.
    Evaluation: :func:`batch_norm`'s, the running statistics.

    Returns a tensor of the shape of ``x``.
    """
    if not training:
        return batch_norm(x, running_mean, running_var, weight, bias, training=False, eps=eps)
    mean = x.mean(dim=(0, 2, 3))                                    # (C,)
    var = x.var(dim=(0, 2, 3), unbiased=False)                      # (C,)
    std = torch.sqrt(var + eps)
    running_std = torch.sqrt(running_var + eps)
    r = (std / running_std).clamp(1 / rmax, rmax).detach()         # stop_gradient
    d = ((mean - running_mean) / running_std).clamp(-dmax, dmax).detach()
    x_hat = ((x - mean[None, :, None, None]) / std[None, :, None, None] * r[None, :, None, None]
             + d[None, :, None, None])
    m = x.numel() // x.shape[1]
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * var * m / (m - 1))
    return _affine(x_hat, weight, bias)
