"""Looking inside trained models: what the normalization layers see and produce.

- :func:`activation_statistics`: forward hooks on every normalization layer record the
  mean and standard deviation of its input (before) and output (after), per channel or
  per sample.
- :func:`with_batch_statistics` and :func:`batch_statistics_accuracy`: batch norm in
  evaluation with the statistics of the test batch instead of the running ones, at any
  batch size (the train/test discrepancy that Ioffe 2017 and Wu & He 2018 discuss).
- :func:`reestimate_batch_statistics`: batch norm's running statistics computed again
  from images, after training: "precise BN" on training images (Wu & Johnson 2021), or
  adaptation to shifted test images (Schneider et al. 2020; Nado et al. 2020).
"""

from __future__ import annotations

import copy

import pandas as pd
import torch
from torch import nn

from ..model import ConvBlock
from ..data import batches
from ..train import Pipeline, predict

#: The dimensions each statistic is taken over, for (N, C, H, W) activations.
_REDUCE = {"channel": (0, 2, 3), "sample": (1, 2, 3)}


def norm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The normalization layer of each convolution block, keyed by the block's name
    (``C1``, ``C2``, ``C4``, ...), in forward order. For ``norm="none"`` the layers are
    identities (whose input equals their output)."""
    return {name.rsplit(".", 1)[-1]: block.norm for name, block in model.named_modules()
            if isinstance(block, ConvBlock)}


@torch.no_grad()
def activation_statistics(model: nn.Module, images: torch.Tensor, pipeline: Pipeline,
                          over: str = "channel") -> pd.DataFrame:
    """Mean and standard deviation of each normalization layer's input and output.

    Args:
        model: a network with :class:`normlab.model.ConvBlock` blocks; run in evaluation
            mode (batch norm uses its running statistics).
        images: uint8 (N, 3, H, W) images, passed as one batch.
        pipeline: how the images become inputs (device, dtype, normalization).
        over: ``channel``: one row per channel, statistics over (N, H, W), what batch norm
            normalizes; ``sample``: one row per image, statistics over (C, H, W), what
            layer norm normalizes.

    Returns:
        A long table with columns ``layer`` (block name), ``where`` (``before`` or
        ``after`` the layer, the affine transform included), ``unit`` (channel or
        sample index), ``mean`` and ``std`` (float, in activation units).

    Raises:
        ValueError: ``over`` is not ``channel`` or ``sample``.
    """
    if over not in _REDUCE:
        raise ValueError(f"Unknown value {over!r} for argument over. "
                         f"Valid values are {', '.join(_REDUCE)}.")
    rows = []

    def record(layer):
        def hook(module, inputs, output):
            for where, x in (("before", inputs[0]), ("after", output)):
                x = x.float()
                mean, std = x.mean(dim=_REDUCE[over]), x.std(dim=_REDUCE[over])
                rows.extend({"layer": layer, "where": where, "unit": i, "mean": m, "std": s}
                            for i, (m, s) in enumerate(zip(mean.tolist(), std.tolist())))
        return hook

    handles = [layer.register_forward_hook(record(name))
               for name, layer in norm_layers(model).items()]
    try:
        pipeline.place(model.eval())
        with pipeline.autocast():
            model(pipeline.inputs(images))
    finally:
        for handle in handles:
            handle.remove()
    return pd.DataFrame(rows)


def with_batch_statistics(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose batch-norm layers normalize with the mean and variance
    of the batch they are given, in evaluation as in training (their running statistics
    are dropped); the original is left unchanged."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return model


def batch_statistics_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                              pipeline: Pipeline, batch_sizes: tuple[int, ...],
                              seed: int = 0) -> pd.Series:
    """Test accuracy of a batch-norm model that normalizes with the statistics of each
    test batch (:func:`with_batch_statistics`), at each batch size.

    The images are shuffled once (``seed``) so that a batch is a random sample of the
    test split (image folders are sorted by class). With running statistics, as in
    evaluation mode, each image is normalized alone and the batch size does not matter;
    with batch statistics an image's output depends on the rest of its batch.

    Args:
        images: uint8 (N, 3, H, W); labels: int64 (N,).
        batch_sizes: the evaluation batch sizes, images per forward pass.

    Returns:
        Test accuracy (percent) indexed by ``batch size``.
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    images, labels = images[order], labels[order]
    batch_model = with_batch_statistics(model)
    accuracy = {b: 100 * (predict(batch_model, images, pipeline, b).argmax(dim=1) == labels)
                .float().mean().item() for b in batch_sizes}
    return pd.Series(accuracy, name="batch statistics").rename_axis("batch size")


@torch.no_grad()
def reestimate_batch_statistics(model: nn.Module, images: torch.Tensor, pipeline: Pipeline,
                                batch_size: int = 500) -> nn.Module:
    """A copy of ``model`` whose batch-norm layers hold the mean and the (unbiased)
    variance, per channel, of the activations they receive over all of ``images`` (uint8
    (N, 3, H, W), no augmentation), instead of the running averages of training; the
    original is left unchanged.

    One pass in batches of ``batch_size`` images, in training mode (each layer normalizing
    with its batch's statistics, as in training), summing each channel's values and squares:
    the population statistics of the final weights ("precise BN", Wu & Johnson 2021,
    Sec. 3), not a moving average over weights that changed during training. On shifted
    test images this is test-time adaptation (Schneider et al. 2020). Returns the copy in
    evaluation mode; a model without batch norm comes back as an unchanged copy.
    """
    model = pipeline.place(copy.deepcopy(model))
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    sums = {layer: [0, 0.0, 0.0] for layer in layers}     # values per channel, sum, squares

    def accumulate(layer, inputs):
        x = inputs[0].detach().double().transpose(0, 1).flatten(1)     # (C, values)
        total = sums[layer]
        total[0] += x.shape[1]
        total[1] += x.sum(dim=1)
        total[2] += x.square().sum(dim=1)

    hooks = [layer.register_forward_pre_hook(accumulate) for layer in layers]
    model.eval()
    for layer in layers:
        layer.train()
    try:
        for batch, _ in batches(images, images, batch_size):
            with pipeline.autocast():
                model(pipeline.inputs(batch))
    finally:
        for hook in hooks:
            hook.remove()
    for layer, (n, total, squares) in sums.items():
        mean = total / n
        layer.running_mean.copy_(mean)
        layer.running_var.copy_((squares / n - mean.square()) * n / (n - 1))
    return model.eval()
