"""What the ablations chapter shows of its models beyond their records, as stored facts
(:func:`normlab.book.facts.stored`): how much instance norm leaves of the images after
pooling in each order, and how zero-padded crops move the statistics that layer norm
normalizes with."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ...data import CIFAR10, augment
from ...train import Pipeline
from .. import probes
from ..facts import stored
from ..runs import Result

#: Test images whose pooled features are compared (one batch).
POOLED_IMAGES = 256
#: Training images cropped both ways for :func:`padding_shift`.
PADDING_IMAGES = 512


def pooled_spread(result: Result, data: CIFAR10) -> float:
    """The largest standard deviation over the first :data:`POOLED_IMAGES` test images of
    a feature after global average pooling (``C1`` ... ``GAP`` of ``result``'s model, fp32):
    near 0 where every image reaches the classifier as the same vector."""
    def compute():
        pipeline = Pipeline.for_config(result.config, data)
        up_to_pooling = torch.nn.Sequential(*list(result.model().children())[:-2])
        with torch.no_grad():
            pooled = up_to_pooling(pipeline.inputs(data.test_images[:POOLED_IMAGES])
                                   .float()).flatten(1)                        # (N, C)
        return pooled.std(dim=0).max().item()
    return stored("pooled-spread", compute, [result], data, {"images": POOLED_IMAGES})


def padding_shift(result: Result, data: CIFAR10) -> pd.DataFrame:
    """How far a random crop moves the per-image mean of each norm layer's input, with the
    border filled with zeros or mirrored: the first :data:`PADDING_IMAGES` training images
    of ``data``, cropped with the config's padding (seed 0, no flip), against the uncropped
    images, |change of the mean| / the uncropped std per (layer, image), median per layer.
    Columns ``zeros`` and ``mirrored``, one row per layer."""
    def compute():
        pipeline = Pipeline.for_config(result.config, data)
        model, sample = result.model(), data.train_images[:PADDING_IMAGES]

        def inputs_per_image(images):
            stats = probes.activation_statistics(model, images, pipeline, over="sample")
            return stats[stats["where"] == "before"].set_index(["layer", "unit"])

        whole = inputs_per_image(sample)
        shift = {}
        for mode, name in (("constant", "zeros"), ("reflect", "mirrored")):
            crops = augment(sample, result.config.crop_padding, flip=False,
                            generator=torch.Generator().manual_seed(0), padding_mode=mode)
            moved = (inputs_per_image(crops)["mean"] - whole["mean"]).abs() / whole["std"]
            shift[name] = moved.groupby("layer", sort=False).median().to_dict()
        return shift
    return pd.DataFrame(stored("padding-shift", compute, [result], data, {"images": PADDING_IMAGES}))


def instance_by_order(results: Sequence[Result]) -> dict[str, Result]:
    """The instance-norm models of the order ablation among ``results``, by order."""
    return {r.config.order: r for r in results if r.config.norm == "instance"}


def zero_padded_layer(results: Sequence[Result]) -> Result:
    """The layer-norm model trained with zero-padded crops among ``results``."""
    return next(r for r in results if r.config.norm == "layer"
                and r.config.crop_padding_mode == "constant")


def facts(results: Sequence[Result], data: CIFAR10) -> None:
    """Compute and store every fact the ablations chapter reads of ``results`` (the
    ablations part, trained on ``data``)."""
    for r in instance_by_order(results).values():
        pooled_spread(r, data)
    padding_shift(zero_padded_layer(results), data)
