"""Tables for the book and the command line, and ``glue`` for numbers in the prose.

Every number the book prints in its text is glued from these functions (myst-nb's
``glue``), never typed by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from ..data import describe
from ..norms import NORM_LABELS
from ..train import Config
from .runs import Result, machine_name
from .verdicts import Difference, against_noise, pooled_sd


def glue(name: str, value, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's ``{glue}`` roles (myst-nb). Where
    myst-nb is not installed (Colab), shows the value when ``display`` is true."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show
            show(value)
        return
    myst_glue(name, value, display=display)


@dataclass(frozen=True)
class ChapterFacts:
    """What a chapter shows, as its part's analysis computes it: ``values``, every value its
    prose quotes (glue name -> text); ``tables``, by name, in the order shown (DataFrames,
    or their Stylers where a table is formatted); ``inputs``, what its figures and visible
    cells are drawn from (results, data, effects)."""

    values: dict[str, str]
    tables: dict[str, object] = field(default_factory=dict)
    inputs: dict[str, object] = field(default_factory=dict)

    def glue(self) -> None:
        """:func:`glue` every one of :attr:`values` under its name."""
        for name, value in self.values.items():
            glue(name, value)


def provenance(results: Sequence[Result]) -> str:
    """One line on where ``results`` were trained: in what precision, on what machine, with
    which torch, from which data (its content identity), e.g. ``"Trained in bfloat16 on
    AMD EPYC (family 25, model 17), 2 threads, cpu, with torch 2.14.1,
    on the canonical CIFAR-10 pixels (cifar10-04c544eb176e291d)."``
    (:func:`normlab.data.describe`); a mix of machines lists each with its count."""
    where = pd.Series([f"in {r.info['precision']} on {machine_name(r.info)}, with torch "
                       f"{r.info['torch']}" for r in results]).value_counts(sort=False)
    data = dict.fromkeys(describe(r.info["data"]) for r in results)
    if len(where) == 1:
        trained = where.index[0]
    else:
        trained = "; ".join(f"{n} of {len(results)} {text}" for text, n in where.items())
    return f"Trained {trained}, on {' and '.join(data)}."


def by_norm(results: Sequence[Result], seed: int = 0) -> dict[str, Result]:
    """The results of one ``seed``, by norm, in the order of ``results``."""
    return {r.config.norm: r for r in results if r.config.seed == seed}


def median_epoch(result: Result) -> float:
    """The median wall time (seconds) of ``result``'s epochs; NaN for a run that diverged
    in its first epoch."""
    return float(np.median(result.history.seconds)) if result.history.seconds else float("nan")


def accuracy_table(results: Sequence[Result]) -> pd.DataFrame:
    """One row per result: norm, seed, trainable parameters, final train and test
    accuracy (percent), the median seconds of its epochs (NaN for a run that diverged in its
    first epoch) and total seconds."""
    return pd.DataFrame([{
        "norm": r.config.norm, "seed": r.config.seed, "parameters": r.parameters,
        "train accuracy (%)": round(100 * r.train_accuracy, 2),
        "test accuracy (%)": round(100 * r.test_accuracy, 2),
        "seconds per epoch": round(median_epoch(r), 1),
        "seconds": round(r.seconds, 1)} for r in results])


def epoch_seconds(results: Sequence[Result]) -> pd.DataFrame:
    """Per norm (rows, in the order of ``results``): its number of ``runs`` and the
    ``seconds per epoch`` of its least disturbed run, the smallest of the runs' median
    epochs. On a shared machine other work slows some epochs of some runs and never speeds
    one up."""
    medians = pd.DataFrame({"norm": [r.config.norm for r in results],
                            "median": [median_epoch(r) for r in results]})
    return medians.groupby("norm", sort=False)["median"].agg(
        runs="size", **{"seconds per epoch": "min"}).round(1)


def per_class_accuracy(results: Sequence[Result], classes: Sequence[str]) -> pd.DataFrame:
    """Test accuracy (percent) per true class (rows) for each result (columns)."""
    columns = {}
    for r in results:
        correct = (r.test_probs.argmax(dim=1) == r.test_labels).float()
        counts = torch.bincount(r.test_labels, minlength=len(classes)).clamp_min(1)
        hits = torch.bincount(r.test_labels, weights=correct, minlength=len(classes))
        columns[r.config.norm] = (100 * hits.double() / counts).tolist()
    return pd.DataFrame(columns, index=list(classes)).round(1)


def wrong_sets(results: Sequence[Result]) -> dict[str, set[int]]:
    """Indices of the test images each result gets wrong, by norm."""
    return {r.config.norm: set(torch.nonzero(r.test_probs.argmax(dim=1) != r.test_labels)
                               .flatten().tolist()) for r in results}


def shared_mistakes(results: Sequence[Result]) -> pd.DataFrame:
    """How many test images each result gets wrong, how many all of them get wrong, and
    how many all would get wrong if their mistakes were independent (the number of images
    times the product of the error rates). Indexed by norm label, then ``all of them``
    and ``all, if independent``.

    Raises:
        ValueError: two results of the same norm (compare one run per norm).
    """
    results = list(results)
    if len({r.config.norm for r in results}) < len(results):
        raise ValueError("shared_mistakes compares one run per norm; got several runs of "
                         "one norm: pick one seed (normlab.book.report.by_norm).")
    wrong = wrong_sets(results)
    n = len(results[0].test_labels)
    expected = n * float(np.prod([len(s) / n for s in wrong.values()]))
    counts = {NORM_LABELS[norm]: len(s) for norm, s in wrong.items()}
    counts |= {"all of them": len(set.intersection(*wrong.values())),
               "all, if independent": round(expected)}
    return pd.Series(counts, name="wrong test images").to_frame()


def seed_summary(results: Sequence[Result]) -> pd.DataFrame:
    """Mean and standard deviation (over seeds, ``ddof=1``) of the final train and test
    accuracy (percent) per norm, with the number of runs."""
    table = accuracy_table(results)
    summary = table.groupby("norm", sort=False)[["train accuracy (%)", "test accuracy (%)"]].agg(
        ["mean", "std"]).round(2)
    summary[("runs", "")] = table.groupby("norm", sort=False).size()
    return summary


def accuracies(results: Sequence[Result],
               accuracy: Callable[[Result], float] = lambda r: r.test_accuracy
               ) -> dict[str, list[float]]:
    """Final test accuracy (percent) of each result, grouped by norm label
    (:data:`normlab.NORM_LABELS`) in the order of ``results``: the input of
    :mod:`~normlab.book.verdicts`. ``accuracy`` gives a result's accuracy (fraction):
    its record's test accuracy, or another measure (flip-averaged, say)."""
    groups: dict[str, list[float]] = {}
    for r in results:
        groups.setdefault(NORM_LABELS[r.config.norm], []).append(100 * accuracy(r))
    return groups


def run_to_run_noise(results: Sequence[Result]) -> tuple[float, int]:
    """The seeds' noise among ``results``: the standard deviation of the test accuracy
    (points) pooled over the groups of runs that differ in their seed only, and its degrees
    of freedom (:func:`normlab.book.verdicts.pooled_sd`). A result listed twice counts once.

    Raises:
        ValueError: no configuration trained with two seeds or more.
    """
    groups: dict[Config, dict[int, float]] = {}
    for r in results:
        groups.setdefault(replace(r.config, seed=0), {})[r.config.seed] = 100 * r.test_accuracy
    return pooled_sd(list(g.values()) for g in groups.values())


def effects(changed: Sequence[Result], unchanged: Sequence[Result], noise: tuple[float, int]
            ) -> dict[str, Difference]:
    """Per norm label, in the order of ``changed``: the test accuracy (percent) of each run
    in ``changed`` minus that of the run of the same norm in ``unchanged``, single runs
    judged with the seeds' ``noise`` (:func:`run_to_run_noise`;
    :func:`normlab.book.verdicts.against_noise`).

    Raises:
        KeyError: a norm of ``changed`` without a run in ``unchanged``.
    """
    base = {r.config.norm: r for r in unchanged}
    return {NORM_LABELS[r.config.norm]: against_noise(
                [100 * r.test_accuracy], [100 * base[r.config.norm].test_accuracy], *noise,
                NORM_LABELS[r.config.norm], "unchanged") for r in changed}


def errors_by_batch_size(results: Sequence[Result]) -> dict[str, dict[int, float]]:
    """Test error (percent) by norm and batch size: the input of
    :func:`normlab.book.verdicts.small_batch_cost`."""
    error = 100 - accuracy_by(results, "batch_size")
    return {norm: row.to_dict() for norm, row in error.iterrows()}


def against_published(results: Sequence[Result], published: dict[str, float]) -> pd.DataFrame:
    """Final test accuracy (percent) per norm next to ``published`` (norm -> percent): the
    mean and the lowest over ``results`` (the seeds), and the lowest minus the published
    figure (points)."""
    table = accuracy_table(results).groupby("norm", sort=False)["test accuracy (%)"].agg(
        ["mean", "min"])
    table.columns = ["mean (%)", "lowest seed (%)"]
    table.insert(0, "best published (%)", pd.Series(published))
    table["lowest seed - published (points)"] = (table["lowest seed (%)"]
                                                  - table["best published (%)"])
    return table.round(2)


def accuracy_by(results: Sequence[Result], field: str, rows: str = "norm") -> pd.DataFrame:
    """Final test accuracy (percent) with one row per value of the config field ``rows``
    and one column per value of ``field``: the table of an ablation or a sweep."""
    table = pd.DataFrame([{rows: getattr(r.config, rows), field: getattr(r.config, field),
                           "test accuracy (%)": round(100 * r.test_accuracy, 2)}
                          for r in results])
    return table.pivot_table(index=rows, columns=field, values="test accuracy (%)",
                             sort=False)
