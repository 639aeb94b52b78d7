"""normlab: what Batch, Layer and Group Normalization change in a small CIFAR-10 network.

The core, what the book teaches, one module per idea:

- :mod:`normlab.norms`: :func:`make_norm` and from-scratch normalization functions;
- :mod:`normlab.model`: :class:`Net`, the C1 ... c11 network;
- :mod:`normlab.receptive_field`: :func:`receptive_field`, the layer-by-layer table;
- :mod:`normlab.data`: CIFAR-10 in memory, channel statistics, augmentation;
- :mod:`normlab.train`: the recipe :class:`Config`, :func:`fit`, :func:`evaluate`,
  :func:`predict` for any ``nn.Module``.

The book's machinery (cached runs, studies, reports, figures) is :mod:`normlab.book`,
which the core never imports.
"""

#: Bumped whenever a change alters trained numbers; part of every result's cache key.
__version__ = "0.2.0"

from .data import CIFAR10, augment, channel_stats, describe, load_data
from .model import MAX_PARAMS, WIDTHS, ConvBlock, Net, Residual, count_parameters
from .norms import (DEFAULT_GROUPS, NORM_LABELS, NORM_NAMES, batch_norm, group_norm, instance_norm,
                    layer_norm, make_norm)
from .receptive_field import receptive_field
from .train import (Config, Diverged, History, Pipeline, choose_device, choose_precision, emulated,
                    evaluate, fit, make_optimizer, native_precision, predict)

__all__ = [
    "CIFAR10", "augment", "channel_stats", "describe", "load_data",
    "MAX_PARAMS", "WIDTHS", "ConvBlock", "Net", "Residual", "count_parameters",
    "DEFAULT_GROUPS", "NORM_LABELS", "NORM_NAMES", "batch_norm", "group_norm", "instance_norm", "layer_norm",
    "make_norm",
    "receptive_field",
    "Config", "Diverged", "History", "Pipeline", "choose_device", "choose_precision", "emulated",
    "evaluate", "fit", "make_optimizer", "native_precision", "predict",
]
