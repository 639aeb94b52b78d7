"""What a chapter computes beyond a line or two, as named functions the chapters call."""

from __future__ import annotations

import pandas as pd

from .report import glue, provenance
from .runs import Result, machine_name, prepare_data, run
from .studies import book_config


def norm_chapter(norm: str, retrain: bool = False) -> Result:
    """The book's model for ``norm`` (seed 0), found in the results or, with ``retrain``,
    trained here, with the numbers its chapter quotes glued: ``train_acc`` and ``test_acc``
    (percent), ``epochs``, ``batch_size``, ``values`` (the N x H x W values per channel
    that batch norm averages over in C1), ``params``, ``warmup_percent``,
    ``label_smoothing``, ``smoothed_true`` and ``smoothed_other`` (the recipe's OneCycle
    warm-up and label-smoothing targets), ``groups``, ``width_range`` and
    ``group_channels`` (group norm's G, the layers' channels and the channels per group),
    ``epoch_s`` (seconds per epoch),
    ``train_minutes`` and ``machine`` (how long the training took, and where), and
    ``provenance`` (:func:`normlab.book.report.provenance`)."""
    config = book_config(norm)
    data = prepare_data(config)
    result = run(config, data, retrain=retrain)
    glue("train_acc", f"{100 * result.train_accuracy:.1f}%")
    glue("test_acc", f"{100 * result.test_accuracy:.1f}%")
    glue("epochs", str(config.epochs))
    glue("batch_size", str(config.batch_size))
    glue("values", f"{config.batch_size * 32 * 32:,}")  # N x H x W of C1
    glue("params", f"{result.parameters:,}")
    glue("warmup_percent", f"{config.pct_start:.0%}")
    glue("label_smoothing", f"{config.label_smoothing:g}")
    classes = len(data.classes)
    glue("smoothed_true", f"{1 - config.label_smoothing + config.label_smoothing / classes:.2f}")
    glue("smoothed_other", f"{config.label_smoothing / classes:.2f}")
    glue("groups", str(config.groups))
    glue("width_range", f"{min(config.widths)} to {max(config.widths)}")
    glue("group_channels", f"{min(config.widths) // config.groups} to "
                           f"{max(config.widths) // config.groups}")
    glue("epoch_s", f"{result.seconds / config.epochs:.0f} s")
    glue("train_minutes", f"{result.seconds / 60:.0f} minutes")
    glue("machine", machine_name(result.info))
    glue("provenance", provenance([result]))
    return result


def history_table(result: Result) -> pd.DataFrame:
    """The per-epoch metrics of ``result``, one row per epoch (rounded to 4 digits)."""
    return pd.DataFrame(result.history.rows()).set_index("epoch").round(4)
