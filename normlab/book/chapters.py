"""What a chapter computes beyond a line or two, as named functions the chapters call."""

from __future__ import annotations

import pandas as pd

from ..data import CIFAR10
from .parts.smallbatch import precise_accuracy
from ..norms import NORM_LABELS
from .report import epoch_seconds, glue, median_epoch, provenance
from .verdicts import against_noise, all_pairs, listing, moves, paired, pairs_beyond, signed, welch
from .runs import Result, load_result, machine_name, prepare_data, run
from .studies import book_config, main_configs


def norm_chapter(norm: str, retrain: bool = False) -> Result:
    """The book's model for ``norm`` (seed 0), found in the results or, with ``retrain``,
    trained here, with the numbers its chapter quotes glued: ``train_acc`` and ``test_acc``
    (percent), ``epochs``, ``batch_size``, ``values`` (the N x H x W values per channel
    that batch norm averages over in C1), ``params``, ``warmup_percent``,
    ``label_smoothing``, ``smoothed_true`` and ``smoothed_other`` (the recipe's OneCycle
    warm-up and label-smoothing targets), ``groups``, ``width_range`` and
    ``group_channels`` (group norm's G, the layers' channels and the channels per group),
    ``epoch_s`` (the median seconds of this run's epochs), ``machine``, ``fastest_epoch_s``,
    ``timed_runs`` and ``train_minutes`` (:func:`book_pace`, as found before any retraining:
    where the book's runs ran, their least disturbed epoch, how many, and a run's length at
    that pace), and ``provenance`` (:func:`normlab.book.report.provenance`)."""
    config = book_config(norm)
    data = prepare_data(config)
    pace = book_pace(norm, data)        # the book's runs, before a retraining replaces one
    result = run(config, data, retrain=retrain)
    machine, fastest, timed = pace or book_pace(norm, data)
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
    glue("epoch_s", f"{median_epoch(result):.0f} s")
    glue("machine", machine)
    glue("fastest_epoch_s", f"{fastest:.0f} s")
    glue("timed_runs", f"{timed} main run{'s' * (timed != 1)}")
    glue("train_minutes", f"{config.epochs * fastest / 60:.0f} minutes")
    glue("provenance", provenance([result]))
    return result


def book_pace(norm: str, data: CIFAR10) -> tuple[str, float, int] | None:
    """Where the book's main runs of ``norm`` ran (:func:`normlab.book.runs.machine_name` of
    the first found, seed 0's where it is), the seconds per epoch of the least disturbed of
    those that ran there (:func:`normlab.book.report.epoch_seconds`: on a shared machine
    other work slows some runs) and how many did; None where none is found. Results are
    only looked up, never trained."""
    found = [r for c in main_configs() if c.norm == norm
             if (r := load_result(c, data)) is not None]
    if not found:
        return None
    machine = machine_name(found[0].info)
    timed = [r for r in found if machine_name(r.info) == machine]
    return machine, float(epoch_seconds(timed)["seconds per epoch"].iloc[0]), len(timed)


def history_table(result: Result) -> pd.DataFrame:
    """The per-epoch metrics of ``result``, one row per epoch (rounded to 4 digits)."""
    return pd.DataFrame(result.history.rows()).set_index("epoch").round(4)


def repairs_table(repairs: dict[str, list[Result]], data: CIFAR10) -> pd.DataFrame:
    """Test accuracy (percent) of every run of :func:`normlab.book.studies.small_batch_repairs`
    (method -> results), and for batch norm also with its running statistics re-estimated
    on the training images of ``data`` after training (``"batch norm, precise"``,
    :func:`normlab.book.parts.smallbatch.precise_accuracy`). Columns ``method``,
    ``batch size``, ``seed`` and ``test accuracy (%)``."""
    rows = []
    for method, results in repairs.items():
        for r in results:
            row = {"batch size": r.config.batch_size, "seed": r.config.seed}
            rows.append({"method": method, **row, "test accuracy (%)": 100 * r.test_accuracy})
            if r.config.norm == "batch":
                rows.append({"method": f"{method}, precise", **row,
                             "test accuracy (%)": 100 * precise_accuracy(r, data)})
    return pd.DataFrame(rows)


def lr_tolerance_table(results: list[Result], noise: tuple[float, int]) -> pd.DataFrame:
    """Per norm (rows, in order of appearance): the peak learning rate with the best test
    accuracy, that accuracy (percent), the rates whose single run is not below it beyond
    the ``noise`` (:func:`normlab.book.verdicts.against_noise`), the rates at which the run
    diverged, and all of it as a ``sentence``."""
    rows = {}
    for norm in dict.fromkeys(r.config.norm for r in results):
        runs = sorted((r for r in results if r.config.norm == norm), key=lambda r: r.config.lr)
        trained = [r for r in runs if not r.diverged]
        diverged = [f"{r.config.lr:g}" for r in runs if r.diverged]
        best = max(trained, key=lambda r: r.test_accuracy, default=None)
        tolerated = [f"{r.config.lr:g}" for r in trained if r is not best and not (
            (d := against_noise([100 * r.test_accuracy], [100 * best.test_accuracy], *noise))
            .beyond_noise and d.difference < 0)]
        subject = "Without normalization," if norm == "none" else f"With {NORM_LABELS[norm]},"
        if best is None:
            sentence = f"{subject} the network diverged at every peak rate tried."
        else:
            sentence = (f"{subject} the best peak rate is {best.config.lr:g} "
                        f"({100 * best.test_accuracy:.1f}%); "
                        + (f"within the noise of it: {listing(tolerated)}; " if tolerated
                           else "every other rate that trained is below it beyond the noise; ")
                        + (f"the network diverged at {listing(diverged)}." if diverged
                           else "the network never diverged."))
        rows[norm] = {"best peak lr": best and best.config.lr,
                      "best test accuracy (%)": best and round(100 * best.test_accuracy, 2),
                      "within the noise of the best": ", ".join(tolerated) or "none",
                      "diverged at": ", ".join(diverged) or "none",
                      "sentence": sentence}
    return pd.DataFrame(rows).T


def lead_by(results: list[Result], field: str, noise: tuple[float, int],
            leader: str = "batch", unit: str = "") -> dict[str, str]:
    """For each other norm among ``results``: ``leader``'s test accuracy minus that norm's
    at each value of the config field ``field`` (single runs judged with ``noise``), as
    one phrase: ``"+8.2 points at 1 epoch (beyond the noise), ..."`` with ``unit``
    ``"epoch"`` (made plural after values other than 1)."""
    accuracy = {(r.config.norm, getattr(r.config, field)): 100 * r.test_accuracy
                for r in results}
    values = sorted({v for _, v in accuracy})
    others = [n for n in dict.fromkeys(r.config.norm for r in results) if n != leader]
    phrases = {}
    for other in others:
        parts = []
        for value in values:
            if (leader, value) in accuracy and (other, value) in accuracy:
                d = against_noise([accuracy[leader, value]], [accuracy[other, value]], *noise)
                at = f"{value} {unit}{'s' * (value != 1)}" if unit else f"{value}"
                parts.append(f"{signed(d.difference)} points at {at} ({d.verdict()})")
        phrases[other] = listing(parts)
    return phrases


def shift_drops(table: pd.DataFrame) -> pd.DataFrame:
    """From :func:`normlab.book.shift.shift_table`: each model's drop of test accuracy
    (points) from its clean accuracy with running statistics, under each shift, averaged
    over the three severities. Columns ``norm``, ``seed``, ``adapted``, ``shift``,
    ``drop``."""
    clean = table[table["shift"] == "clean"].set_index(["norm", "seed", "adapted"])["accuracy"]
    shifted = table[table["shift"] != "clean"]
    drops = shifted.assign(drop=[clean[(n, s, False)] - a for n, s, a in
                                 zip(shifted["norm"], shifted["seed"], shifted["accuracy"])])
    return (drops.groupby(["norm", "seed", "adapted", "shift"], sort=False)["drop"].mean()
            .reset_index())


def shift_summary(table: pd.DataFrame) -> dict[str, str]:
    """From :func:`normlab.book.shift.shift_table` (at least two seeds per norm), as
    sentences: ``drops``, each norm's mean drop over every shift and severity;
    ``differences``, for each shift, the pairs of norms whose drops differ beyond the noise
    (Welch's t test over the seeds); ``adaptation``, what re-estimating batch norm's
    statistics on the shifted images does to its accuracy under each shift (paired t test
    over the seeds); ``per_image``, for each shift, the other norms whose drops differ
    beyond the noise from re-estimated batch norm's (Welch; positive: the other norm drops
    more). The last two say so where no batch-norm model was re-estimated, and
    ``per_image`` where no other norm was tested or, per shift, batch norm was not."""
    drops = shift_drops(table)
    plain = drops[~drops["adapted"]]
    overall = plain.groupby("norm", sort=False)["drop"].mean()
    sentences = {"drops": listing([f"{NORM_LABELS[n]} {d:.1f} points" for n, d in overall.items()])}
    per_shift = []
    for name, rows in plain.groupby("shift", sort=False):
        groups = {NORM_LABELS[n]: list(r["drop"]) for n, r in rows.groupby("norm", sort=False)}
        per_shift.append(f"under {name}, {pairs_beyond(all_pairs(groups), 'no pair')}")
    sentences["differences"] = "; ".join(per_shift)
    batch = drops[drops["norm"] == "batch"].pivot(index=["shift", "seed"], columns="adapted",
                                                   values="drop")
    if True not in batch:
        sentences["adaptation"] = sentences["per_image"] = (
            "no batch-norm model was tested with re-estimated statistics")
        return sentences
    # a smaller drop is a higher accuracy: the paired difference of accuracies is
    # (running-statistics drop) - (re-estimated drop)
    changes = {name: paired(list(-rows[True]), list(-rows[False]), "re-estimated",
                            "running statistics")
               for name, rows in batch.groupby(level="shift", sort=False)}
    sentences["adaptation"] = moves(changes, "batch norm's test accuracy")
    reestimated = batch[True].dropna()
    per_image = []
    for name, rows in plain[plain["norm"] != "batch"].groupby("shift", sort=False):
        if name not in reestimated.index.get_level_values("shift"):
            per_image.append(f"under {name}, batch norm was not re-estimated")
            continue
        found = [welch(list(r["drop"]), list(reestimated.xs(name, level="shift")),
                       NORM_LABELS[n], "re-estimated BatchNorm")
                 for n, r in rows.groupby("norm", sort=False)]
        per_image.append(f"under {name}, {pairs_beyond(found, 'none')}")
    sentences["per_image"] = "; ".join(per_image) or "no other norm was tested"
    return sentences
