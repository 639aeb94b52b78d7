"""The batch-size part (the sweep of :func:`normlab.book.studies.batch_size_sweep`): what
its chapter shows (:func:`chapter`) and the small-batch cost that the landing page and
the answer quote too (:func:`small_batch_cost`)."""

from __future__ import annotations

import pandas as pd

from ...norms import NORM_LABELS
from ...train import Config
from .. import verdicts
from ..report import ChapterFacts, accuracy_by, errors_by_batch_size, provenance
from ..runs import Result, prepare_data
from . import ablations
from ..studies import (ABLATION_BATCH_SIZE, REFERENCE_BATCH_SIZE, SWEEP_BATCH_SIZES, SWEEP_NORMS,
                       results, scaled_lr)


def small_batch_cost(sweep: list[Result], noise_: tuple[float, int]) -> verdicts.SmallBatchCost:
    """What the smallest batch size of the sweep costs batch and group norm against
    :data:`normlab.book.studies.ABLATION_BATCH_SIZE` (:func:`normlab.book.verdicts.small_batch_cost`)."""
    return verdicts.small_batch_cost(errors_by_batch_size(sweep), min(SWEEP_BATCH_SIZES),
                                     ABLATION_BATCH_SIZE, *noise_)


def chapter(profile: str | None = None) -> ChapterFacts:
    """What the batch-size chapter shows: the sweep's setting, its error table and
    verdicts, the training speed per batch size; ``inputs``: the sweep's ``results``, its
    ``setting`` and ``data``, and ``noise`` (half the yardstick) for the figure."""
    sweep = results("batchsizes", profile)
    setting = sweep[0].config
    data = prepare_data(setting)
    noise_ = ablations.noise(ablations.ablation_results(profile))
    yardstick = verdicts.against_noise([0.0], [0.0], *noise_).high
    small, reference = min(SWEEP_BATCH_SIZES), ABLATION_BATCH_SIZE
    values = {"sweep_epochs": str(setting.epochs), "sweep_images": f"{len(data.train_labels):,}",
              "sweep_test_images": f"{len(data.test_labels):,}",
              "sweep_sizes": ", ".join(map(str, SWEEP_BATCH_SIZES)), "sweep_runs": str(len(sweep)),
              "sweep_minutes": f"{sum(r.seconds for r in sweep) / 60:.0f}",
              "lr_reference": str(Config.lr), "batch_reference": str(REFERENCE_BATCH_SIZE),
              "lr_smallest": f"{scaled_lr(small):.4g}", "provenance": provenance(sweep),
              "sweep_noise": f"{noise_[0]:.2f}", "sweep_yardstick": f"{yardstick:.2f}",
              "reference_batch": str(reference)}
    error = (100 - accuracy_by(sweep, "batch_size")).round(2)
    error.index = error.index.map(NORM_LABELS)
    error.columns.name = "test error (%) at batch size"
    errors = errors_by_batch_size(sweep)
    for norm in SWEEP_NORMS:
        rise = verdicts.against_noise(
            [errors[norm][small]], [errors[norm][reference]], *noise_,
            f"{NORM_LABELS[norm]}'s test error at batch size {small}", f"that at batch size {reference}")
        values |= {f"{norm}_rise": rise.sentence(), f"{norm}_error_small": f"{errors[norm][small]:.1f}",
                   f"{norm}_error_reference": f"{errors[norm][reference]:.1f}"}
    values |= {"verdict": small_batch_cost(sweep, noise_).sentence(), "smallest_batch": str(small)}
    speed = pd.DataFrame([{"norm": NORM_LABELS[r.config.norm], "batch size": r.config.batch_size,
                           "images per second": round(r.config.epochs * len(data.train_labels) / r.seconds)}
                          for r in sweep])
    rates = speed.pivot_table(index="norm", columns="batch size", values="images per second",
                              sort=False).astype(int)
    rates.columns.name = "images per second at batch size"
    return ChapterFacts(values, {"error": error, "speed": rates},
                        {"results": sweep, "setting": setting, "data": data, "noise": yardstick / 2})
