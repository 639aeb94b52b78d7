"""What the chapters show of the main models beyond their records, as stored facts
(:func:`normlab.book.facts.stored`): flip-averaged accuracy (comparison), activation
statistics (activations), accuracy with batch statistics (ablations, answer), and the
demonstrations of training and evaluation mode (the norms chapter and each norm's own).

Each function takes a result and the data it was trained on (``data``, a
:class:`normlab.CIFAR10`: its training split gives the input normalization) and computes
in the config's precision through its :class:`normlab.Pipeline`, except the
demonstrations, which run the model in fp32 on a few test images.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ...data import CIFAR10
from ...train import Pipeline, evaluate
from .. import probes
from ..facts import stored
from ..runs import Result

#: Test images the activation statistics are taken over (one batch).
PROBE_IMAGES = 512
#: Evaluation batch sizes at which batch norm is tried with the statistics of its batch.
BATCH_SIZES = (1, 2, 4, 8, 32, 128, 1000)


def flip_accuracy(result: Result, data: CIFAR10) -> float:
    """Test accuracy (fraction) of ``result``'s model when each test image's class
    probabilities are averaged with those of its mirror image (test-time augmentation:
    :func:`normlab.predict` with ``flip=True``)."""
    def compute():
        pipeline = Pipeline.for_config(result.config, data)
        return evaluate(result.model(), data.test_images, data.test_labels, pipeline,
                        flip=True)[1]
    return stored("flip-accuracy", compute, [result], data)


def activation_statistics(result: Result, data: CIFAR10, over: str) -> pd.DataFrame:
    """:func:`normlab.book.probes.activation_statistics` of ``result``'s model on the first
    :data:`PROBE_IMAGES` test images, ``over`` ``channel`` or ``sample``."""
    def compute():
        pipeline = Pipeline.for_config(result.config, data)
        table = probes.activation_statistics(result.model(), data.test_images[:PROBE_IMAGES],
                                             pipeline, over=over)
        return table.to_dict("list")
    return pd.DataFrame(stored("activations", compute, [result], data,
                               {"over": over, "images": PROBE_IMAGES}))


def shift_gap(result: Result, data: CIFAR10) -> float:
    """Median over the channels of every norm layer of |the channel's mean after the layer
    (:func:`activation_statistics` over channels) - the layer's shift beta_c|: how far the
    layer's output mean is from its learned shift on test images."""
    table = activation_statistics(result, data, "channel")
    after = table[table["where"] == "after"]

    def compute():
        gaps = [after[after["layer"] == name]["mean"].to_numpy() - layer.bias.detach().numpy()
                for name, layer in probes.norm_layers(result.model()).items()]
        return float(np.median(np.abs(np.concatenate(gaps))))
    return stored("shift-gap", compute, [result], data, {"images": PROBE_IMAGES})


def batch_statistics(result: Result, data: CIFAR10) -> pd.Series:
    """Test accuracy (percent) of ``result``'s batch-norm model normalizing with the
    statistics of each test batch, at each of :data:`BATCH_SIZES`
    (:func:`normlab.book.probes.batch_statistics_accuracy`), indexed by ``batch size``."""
    def compute():
        pipeline = Pipeline.for_config(result.config, data)
        accuracy = probes.batch_statistics_accuracy(result.model(), data.test_images,
                                                    data.test_labels, pipeline, BATCH_SIZES)
        return {str(b): a for b, a in accuracy.items()}
    value = stored("batch-statistics", compute, [result], data, {"batch_sizes": BATCH_SIZES})
    return pd.Series({int(b): a for b, a in value.items()},
                     name="batch statistics").rename_axis("batch size")


def alone_and_together(result: Result, data: CIFAR10, images: int = 16) -> pd.DataFrame:
    """Does an image's prediction depend on the rest of its batch? The model's logits for
    the first test image alone and inside a batch of the first ``images``, in evaluation
    and in training mode (fp32): per mode (rows), the ``largest change of a logit`` and
    whether the ``prediction changed``. Only batch norm's training mode mixes the batch."""
    def compute():
        model = result.model()
        x = Pipeline.for_config(result.config, data).inputs(data.test_images[:images]).float()
        rows = {}
        with torch.no_grad():
            for mode in ("eval", "train"):
                getattr(model, mode)()                  # train mode on this copy only
                alone, together = model(x[:1]), model(x)[:1]
                rows[f"{mode} mode"] = {
                    "largest change of a logit": (alone - together).abs().max().item(),
                    "prediction changed": bool(alone.argmax() != together.argmax())}
        return rows
    return pd.DataFrame(stored("alone-and-together", compute, [result], data,
                               {"images": images})).T


def c1_modes(result: Result, data: CIFAR10, images: int = 32) -> pd.DataFrame:
    """Batch norm's three ways of normalizing, on what the first block's layer (C1) of a
    trained batch-norm model receives from the first ``images`` test images (fp32): in
    training mode within the batch, in training mode for the first image alone, and in
    evaluation mode with the running statistics. Per way (rows): the output's ``mean``
    and ``std`` for the first image, and its ``max |difference from evaluation|``
    (rounded to 3 digits)."""
    def compute():
        c1 = result.model().C1
        x = Pipeline.for_config(result.config, data).inputs(data.test_images[:images]).float()
        with torch.no_grad():
            received = c1.relu(c1.conv(x))                     # (images, C, 32, 32)
            bn = copy.deepcopy(c1.norm)        # a copy: training mode updates running statistics
            outputs = {f"training, in a batch of {images}": bn.train()(received)[:1],
                       "training, alone": bn.train()(received[:1]),
                       "evaluation (running statistics)": bn.eval()(received[:1])}
        reference = outputs["evaluation (running statistics)"]
        return {name: {"mean": out.mean().item(), "std": out.std().item(),
                       "max |difference from evaluation|": (out - reference).abs().max().item()}
                for name, out in outputs.items()}
    return pd.DataFrame(stored("c1-modes", compute, [result], data, {"images": images})).T.round(3)


def facts(results: Sequence[Result], data: CIFAR10) -> None:
    """Compute and store every fact the chapters read of the main models ``results``
    (trained on ``data``): each model's flip-averaged accuracy; for seed 0 of each norm,
    the activation statistics and shift gap and the train/evaluation demonstration; for
    seed 0 of batch norm, the accuracy with batch statistics and C1's three modes."""
    for r in results:
        flip_accuracy(r, data)
    for r in (r for r in results if r.config.seed == 0):
        for over in ("channel", "sample"):
            activation_statistics(r, data, over)
        shift_gap(r, data)
        alone_and_together(r, data)
        if r.config.norm == "batch":
            batch_statistics(r, data)
            c1_modes(r, data)
