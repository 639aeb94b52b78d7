"""The learning-rate, budget, smoothness and small-batch parts, as the chapter on why
normalization helps shows them: :func:`chapter`, with the learning-rate tolerance
(:func:`lr_tolerance_table`) and batch norm's lead per budget (:func:`lead_by`)."""

from __future__ import annotations

import pandas as pd

from ...norms import NORM_LABELS
from .. import verdicts
from ..report import ChapterFacts
from ..runs import Result, prepare_data
from ..smoothness import smoothness
from ..studies import WHY_NORMS, results, study_config
from ..verdicts import against_noise, listing, signed
from . import ablations, smallbatch

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


def chapter(profile: str | None = None) -> ChapterFacts:
    """What the chapter on why normalization helps shows: the studies' setting and noise,
    the learning-rate tolerance and batch norm's lead per budget (each with its verdicts),
    the smoothness probes, and the small-batch repairs (:mod:`~normlab.book.parts.smallbatch`);
    ``inputs``: ``lr`` and ``budget`` (their results), ``noise`` (half the yardstick, for
    the figures) and ``probes`` (:func:`normlab.book.smoothness.smoothness` per norm)."""
    noise = ablations.noise(ablations.ablation_results(profile))
    yardstick = verdicts.against_noise([0.0], [0.0], *noise).high
    setting = study_config("batch", profile=profile)
    data = prepare_data(setting)
    values = {"why_setting": f"{len(data.train_labels):,} training images, {setting.epochs} epochs, "
                             f"batch size {setting.batch_size}",
              "why_noise": f"{noise[0]:.2f}", "why_yardstick": f"{yardstick:.2f}"}
    lr_runs = results("lr", profile)
    tolerance = lr_tolerance_table(lr_runs, noise)
    values |= {f"lr_{norm}": row["sentence"] for norm, row in tolerance.iterrows()}
    budget_runs = results("budget", profile)
    values |= {f"lead_{other}": sentence
               for other, sentence in lead_by(budget_runs, "epochs", noise, unit="epoch").items()}
    longest = max(r.config.epochs for r in budget_runs)
    final = {r.config.norm: 100 * r.test_accuracy for r in budget_runs if r.config.epochs == longest}
    values["lead_final"] = " ".join(
        verdicts.against_noise([final["batch"]], [final[other]], *noise, "BatchNorm",
                               NORM_LABELS[other]).sentence() for other in final if other != "batch")
    probes = {norm: smoothness(study_config(norm, profile=profile), data, profile=profile)
              for norm in WHY_NORMS}
    values |= _smoothness_values(probes)
    repairs, repair_values = smallbatch.repairs(profile)
    values |= repair_values
    return ChapterFacts(values, {"tolerance": tolerance.drop(columns="sentence"), "repairs": repairs},
                        {"lr": lr_runs, "budget": budget_runs, "noise": yardstick / 2,
                         "probes": probes})


def _smoothness_values(probes: dict[str, pd.DataFrame]) -> dict[str, str]:
    """The probes' medians over the second half of training, per norm: ``probe_count``,
    ``smooth_ranges`` (the loss range), ``smooth_betas`` (beta-smoothness) and
    ``smooth_compare`` (batch norm's against no normalization's)."""
    late = {n: t[t["step"] > t["step"].max() / 2] for n, t in probes.items()}
    ratio = {column: late["batch"][column].median() / late["none"][column].median()
             for column in ("beta", "loss_range")}
    return {"probe_count": str(len(probes["batch"])),
            "smooth_ranges": listing([f"{NORM_LABELS[n]} {t['loss_range'].median():.3f}"
                                      for n, t in late.items()]),
            "smooth_betas": listing([f"{NORM_LABELS[n]} {t['beta'].median():.1f}"
                                     for n, t in late.items()]),
            "smooth_compare": f"with batch norm the median beta-smoothness is {ratio['beta']:.2f} "
                              f"times, and the median loss range {ratio['loss_range']:.2f} times, "
                              "the network's without normalization."}
