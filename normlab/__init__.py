"""normlab: what Batch, Layer and Group Normalization change in a small CIFAR-10 network.

The public API, re-exported from one module per idea:

- :mod:`normlab.norms`: :func:`make_norm` and from-scratch normalization functions;
- :mod:`normlab.model`: :class:`Net`, the C1 ... c11 network;
- :mod:`normlab.receptive_field`: :func:`receptive_field`, the layer-by-layer table;
- :mod:`normlab.data`: CIFAR-10 in memory, channel statistics, augmentation;
- :mod:`normlab.train`: :func:`fit`, :func:`evaluate`, :func:`predict`;
- :mod:`normlab.experiment`: :class:`Config` -> :func:`run` -> :class:`Result`, cached;
- :mod:`normlab.studies`: the batch-size sweep and the ablations, as configs;
- :mod:`normlab.probes`: activation statistics and batch norm's evaluation modes;
- :mod:`normlab.plots`: figures.
"""

#: Bumped whenever a change alters trained numbers; part of every result's cache key.
__version__ = "0.1.0"

from .data import CIFAR10, augment, channel_stats, load_cifar10, load_data, load_image_folder
from .experiment import (Config, Mistake, Result, book_config, current_profile, flip_accuracy,
                         load_result, misclassified, prepare_data, run)
from .model import MAX_PARAMS, WIDTHS, ConvBlock, Net, Residual, count_parameters
from .norms import (DEFAULT_GROUPS, NORM_NAMES, batch_norm, canonical_norm, group_norm,
                    instance_norm, layer_norm, make_norm)
from .train import History, choose_device, choose_precision, evaluate, fit, predict
from . import plots, probes, report, studies
from .receptive_field import receptive_field

__all__ = [
    "CIFAR10", "augment", "channel_stats", "load_cifar10", "load_data", "load_image_folder",
    "Config", "Mistake", "Result", "book_config", "current_profile", "flip_accuracy",
    "load_result", "misclassified", "prepare_data", "run",
    "MAX_PARAMS", "WIDTHS", "ConvBlock", "Net", "Residual", "count_parameters",
    "DEFAULT_GROUPS", "NORM_NAMES", "batch_norm", "canonical_norm", "group_norm",
    "instance_norm", "layer_norm", "make_norm",
    "History", "choose_device", "choose_precision", "evaluate", "fit", "predict",
    "plots", "probes", "report", "studies", "receptive_field",
]
