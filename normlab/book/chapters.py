"""What a chapter computes beyond a line or two, as named functions the chapters call."""

from __future__ import annotations

import pandas as pd

from ..data import CIFAR10
from ..train import Pipeline, predict
from .probes import reestimate_batch_statistics
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


def small_batch_repairs(repairs: dict[str, list[Result]], data: CIFAR10) -> pd.DataFrame:
    """Test accuracy (percent) of every run of :func:`normlab.book.studies.small_batch_repairs`
    (method -> results), and for batch norm also with its running statistics re-estimated
    on the training images of ``data`` after training (``"batch norm, precise"``,
    :func:`normlab.book.probes.reestimate_batch_statistics`). Columns ``method``,
    ``batch size``, ``seed`` and ``test accuracy (%)``."""
    rows = []
    for method, results in repairs.items():
        for r in results:
            row = {"batch size": r.config.batch_size, "seed": r.config.seed}
            rows.append({"method": method, **row, "test accuracy (%)": 100 * r.test_accuracy})
            if r.config.norm == "batch":
                pipeline = Pipeline.for_config(r.config, data)
                model = reestimate_batch_statistics(r.model(), data.train_images, pipeline)
                correct = predict(model, data.test_images, pipeline).argmax(dim=1) == data.test_labels
                rows.append({"method": f"{method}, precise", **row,
                             "test accuracy (%)": 100 * correct.float().mean().item()})
    return pd.DataFrame(rows)
