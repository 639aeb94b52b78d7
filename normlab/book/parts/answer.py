"""The answer: what its chapter quotes from the other parts, computed by their functions
(nothing computed twice): the main models' verdicts, the studies' short runs and noise, the
small-batch cost (:mod:`~normlab.book.parts.batchsizes`), the residual and order effects
(:mod:`~normlab.book.parts.ablations`) and batch norm with the statistics of one image
(:func:`normlab.book.parts.main.batch_statistics`)."""

from __future__ import annotations

from .. import verdicts
from ..report import ChapterFacts, accuracies, provenance
from ..runs import prepare_data, run
from ..studies import book_config, results
from . import ablations, batchsizes
from .main import batch_statistics


def _means(groups: dict[str, list[float]]) -> str:
    """``"BatchNorm 85.09%, LayerNorm 84.43% and GroupNorm 84.21%"``: each group's mean."""
    return verdicts.listing([f"{label} {sum(v) / len(v):.2f}%" for label, v in groups.items()])


def _batch_norm_against_the_others(groups: dict[str, list[float]]) -> str:
    """Where batch norm stands against layer and group norm (Welch's t tests)."""
    return "BatchNorm is " + verdicts.standing(
        [verdicts.welch(groups["BatchNorm"], groups[other], "BatchNorm", other)
         for other in ("LayerNorm", "GroupNorm")])


def chapter(profile: str | None = None) -> ChapterFacts:
    """Every value the answer chapter quotes (it shows no table)."""
    main = results("main", profile)
    full = accuracies(main)
    means = [sum(v) / len(v) for v in full.values()]
    runs = ablations.ablation_results(profile)
    noise = ablations.noise(runs)
    short_runs = runs["seeds"]
    short = accuracies(short_runs)
    setting = short_runs[0].config
    order = ablations.order_effects(runs, noise)
    batch = run(book_config("batch", profile), profile=profile)
    alone = batch_statistics(batch, prepare_data(batch.config))[1]
    return ChapterFacts({
        "full_means": _means(full), "full_seeds": str(len(next(iter(full.values())))),
        "full_spread": f"{max(means) - min(means):.2f}",
        "full_pairs": verdicts.pairs_beyond(verdicts.all_pairs(full), "no pair of norms"),
        "short_setting": f"{setting.train_subset:,} training images for {setting.epochs} epochs",
        "short_means": _means(short),
        "short_pairs": verdicts.pairs_beyond(verdicts.all_pairs(short), "no pair of norms"),
        "full_batch": _batch_norm_against_the_others(full),
        "short_batch": _batch_norm_against_the_others(short),
        "small_batches": batchsizes.small_batch_cost(results("batchsizes", profile), noise).sentence(),
        "residual": verdicts.moves(ablations.residual_effects(runs, noise),
                                   "without the residual additions the test accuracy"),
        "order": verdicts.moves(order, "normalizing before the ReLU, the test accuracy"),
        "instance_order": verdicts.signed(order["InstanceNorm"].difference),
        "bn_running": f"{100 * batch.test_accuracy:.2f}%", "bn_alone": f"{alone:.2f}%",
        "provenance": provenance(main)})
