"""The landing page: the main models' summary and verdicts, against the published
solutions, and the small-batch cost (:mod:`~normlab.book.parts.batchsizes`)."""

from __future__ import annotations

from .. import verdicts
from ..report import ChapterFacts, accuracies, against_published, provenance, seed_summary
from ..runs import current_profile
from ..studies import ABLATION_BATCH_SIZE, BOOK_NORMS, PUBLISHED_BEST, SWEEP_BATCH_SIZES, results
from . import ablations, batchsizes
from .main import published_sentence


def chapter(profile: str | None = None) -> ChapterFacts:
    """What the landing page shows: every value it quotes, the ``summary`` table over
    seeds, and its figure's input (``runs``, the main models)."""
    runs = results("main", profile)
    summary = seed_summary(runs)
    test = summary["test accuracy (%)"]
    values = {f"{norm}_test": f"{test.loc[norm, 'mean']:.2f} ± {test.loc[norm, 'std']:.2f}%"
              for norm in BOOK_NORMS}
    values["seed_count"] = str(summary[("runs", "")].iloc[0])
    values["beyond_noise"] = verdicts.pairs_beyond(verdicts.all_pairs(accuracies(runs)),
                                                   empty="no pair of norms")
    values["published_sentence"] = published_sentence(
        against_published(runs, PUBLISHED_BEST)["lowest seed - published (points)"],
        "solution of the assignment", ";", "weakest")
    sweep = results("batchsizes", profile)
    values |= {"wu_he": batchsizes.small_batch_cost(
                   sweep, ablations.noise(ablations.ablation_results(profile))).short(),
               "sweep_images": f"{sweep[0].config.train_subset:,}",
               "sweep_epochs": str(sweep[0].config.epochs),
               "smallest_batch": str(min(SWEEP_BATCH_SIZES)),
               "reference_batch": str(ABLATION_BATCH_SIZE),
               "profile": profile or current_profile(), "provenance": provenance(runs)}
    return ChapterFacts(values, {"summary": summary}, {"runs": runs})
