"""The small-batch repairs: their table and verdicts (:func:`repairs`), and beyond their
records, as a stored fact (:func:`normlab.book.facts.fact`), batch norm's test accuracy
with its running statistics re-estimated on the training images after training
("precise BN")."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ...data import CIFAR10
from ...train import Pipeline, predict
from .. import verdicts
from ..facts import fact
from ..probes import reestimate_batch_statistics
from ..runs import Result, data_for, run_each
from ..studies import ABLATION_BATCH_SIZE, SMALL_BATCH_SIZE, STUDY_SEEDS, small_batch_repairs


@fact("precise-accuracy")
def precise_accuracy(result: Result, data: CIFAR10) -> float:
    """Test accuracy (fraction) of ``result``'s batch-norm model after its running
    statistics are re-estimated on all training images of ``data``
    (:func:`normlab.book.probes.reestimate_batch_statistics`, Wu & Johnson 2021)."""
    pipeline = Pipeline.for_config(result.config, data)
    model = reestimate_batch_statistics(result.model(), data.train_images, pipeline)
    correct = predict(model, data.test_images, pipeline).argmax(dim=1) == data.test_labels
    return correct.float().mean().item()


def facts(results: Sequence[Result], data: dict[tuple, CIFAR10]) -> None:
    """Compute and store the precise-BN accuracy of every batch-norm model among
    ``results`` (the small-batch part), each on the data it was trained on (``data`` by
    subset)."""
    for r in results:
        if r.config.norm == "batch":
            precise_accuracy(r, data[(r.config.train_subset, r.config.test_subset)])


def repairs_table(repairs: dict[str, list[Result]], data: dict[tuple, CIFAR10]) -> pd.DataFrame:
    """Test accuracy (percent) of every run of :func:`normlab.book.studies.small_batch_repairs`
    (method -> results), and for batch norm also with its running statistics re-estimated
    on its own training images (``data`` by subset) after training (``"batch norm, precise"``,
    :func:`normlab.book.parts.smallbatch.precise_accuracy`). Columns ``method``,
    ``batch size``, ``seed`` and ``test accuracy (%)``."""
    rows = []
    for method, results in repairs.items():
        for r in results:
            row = {"batch size": r.config.batch_size, "seed": r.config.seed}
            rows.append({"method": method, **row, "test accuracy (%)": 100 * r.test_accuracy})
            if r.config.norm == "batch":
                rows.append({"method": f"{method}, precise", **row,
                             "test accuracy (%)": 100 * precise_accuracy(
                                 r, data[(r.config.train_subset, r.config.test_subset)])})
    return pd.DataFrame(rows)


def repairs(profile: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """The small-batch repairs (:func:`normlab.book.studies.small_batch_repairs`): the mean
    test accuracy (percent) per method and
    batch size, and the values the chapter quotes: the batch sizes and seeds, each method's
    cost of the small batch (Welch), precise BN's gain (paired) and the comparisons between
    repairs at the small batch (Welch)."""
    configs = small_batch_repairs(profile)
    data = data_for([c for cs in configs.values() for c in cs])
    runs = {label: run_each(cs, profile=profile, data=data) for label, cs in configs.items()}
    table = repairs_table(runs, data)
    accuracy = {(m, b): g["test accuracy (%)"].tolist()
                for (m, b), g in table.groupby(["method", "batch size"], sort=False)}
    small, reference = SMALL_BATCH_SIZE, ABLATION_BATCH_SIZE
    costs = [verdicts.welch(accuracy[m, small], accuracy[m, reference], f"{m} at batch size {small}",
                            f"{m} at batch size {reference}") for m in dict.fromkeys(table["method"])]
    precise = verdicts.paired(accuracy["batch norm, precise", small], accuracy["batch norm", small],
                              "Precise BN", "batch norm with its running averages")
    between = [verdicts.welch(accuracy[a, small], accuracy[b, small], a, b) for a, b in (
        ("group norm", "batch norm, precise"), ("group norm + WS", "group norm"))]
    values = {"small_batch": str(small), "reference_batch": str(reference),
              "repair_seeds": str(len(STUDY_SEEDS)),
              "repair_costs": " ".join(d.sentence() for d in costs),
              "precise_gain": precise.sentence(),
              "repair_between": " ".join(d.sentence() for d in between)}
    means = table.pivot_table(index="method", columns="batch size", values="test accuracy (%)",
                              aggfunc="mean", sort=False).round(2)
    return means, values
