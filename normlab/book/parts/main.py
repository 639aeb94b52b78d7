"""The main part: the three norms, five seeds each, at the book's recipe. What its chapters
show: each norm's own chapter (:func:`norm_chapter`), the comparison (:func:`comparison`)
and the activations (:func:`activations`).

Beyond the records, as stored facts (:func:`normlab.book.facts.fact`): flip-averaged
accuracy (comparison), activation statistics (activations), accuracy with batch statistics
(ablations, answer), and the demonstrations of training and evaluation mode (the norms
chapter and each norm's own). Each takes a result and the data it was trained on (``data``,
a :class:`normlab.CIFAR10`: its training split gives the input normalization) and computes
in the config's precision through its :class:`normlab.Pipeline`, except the
demonstrations, which run the model in fp32 on a few test images. :func:`facts` computes
them all, for :func:`normlab.book.reproduce`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ...data import CIFAR10, describe
from ...norms import NORM_LABELS
from ...train import Pipeline, evaluate
from .. import probes
from ..facts import fact
from ..report import (ChapterFacts, accuracies, accuracy_table, against_published, by_norm,
                      epoch_seconds, glue, median_epoch, per_class_accuracy, provenance,
                      seed_summary, shared_mistakes, wrong_sets)
from ..runs import Result, load_result, machine_name, prepare_data, run
from ..studies import PUBLISHED_BEST, PUBLISHED_SOURCE, book_config, main_configs, results
from ..verdicts import all_pairs, paired_sentence, pairs_beyond, signed

#: Test images the activation statistics are taken over (one batch).
PROBE_IMAGES = 512
#: Evaluation batch sizes at which batch norm is tried with the statistics of its batch.
BATCH_SIZES = (1, 2, 4, 8, 32, 128, 1000)


@fact("flip-accuracy")
def flip_accuracy(result: Result, data: CIFAR10) -> float:
    """Test accuracy (fraction) of ``result``'s model when each test image's class
    probabilities are averaged with those of its mirror image (test-time augmentation:
    :func:`normlab.predict` with ``flip=True``)."""
    pipeline = Pipeline.for_config(result.config, data)
    return evaluate(result.model(), data.test_images, data.test_labels, pipeline, flip=True)[1]


@fact("activations", decode=pd.DataFrame)
def activation_statistics(result: Result, data: CIFAR10, over: str,
                          images: int = PROBE_IMAGES) -> pd.DataFrame:
    """:func:`normlab.book.probes.activation_statistics` of ``result``'s model on the first
    ``images`` test images, ``over`` ``channel`` or ``sample``."""
    pipeline = Pipeline.for_config(result.config, data)
    return probes.activation_statistics(result.model(), data.test_images[:images], pipeline,
                                        over=over).to_dict("list")


@fact("shift-gap")
def shift_gap(result: Result, data: CIFAR10, images: int = PROBE_IMAGES) -> float:
    """Median over the channels of every norm layer of |the channel's mean after the layer
    (:func:`activation_statistics` over channels) - the layer's shift beta_c|: how far the
    layer's output mean is from its learned shift on test images."""
    table = activation_statistics(result, data, "channel", images)
    after = table[table["where"] == "after"]
    gaps = [after[after["layer"] == name]["mean"].to_numpy() - layer.bias.detach().numpy()
            for name, layer in probes.norm_layers(result.model()).items()]
    return float(np.median(np.abs(np.concatenate(gaps))))


def _by_batch_size(value: dict) -> pd.Series:
    """A stored accuracy per batch size (JSON keys are strings) as a Series."""
    return pd.Series({int(b): a for b, a in value.items()},
                     name="batch statistics").rename_axis("batch size")


@fact("batch-statistics", decode=_by_batch_size)
def batch_statistics(result: Result, data: CIFAR10,
                     batch_sizes: tuple[int, ...] = BATCH_SIZES) -> pd.Series:
    """Test accuracy (percent) of ``result``'s batch-norm model normalizing with the
    statistics of each test batch, at each of ``batch_sizes``
    (:func:`normlab.book.probes.batch_statistics_accuracy`), indexed by ``batch size``."""
    pipeline = Pipeline.for_config(result.config, data)
    accuracy = probes.batch_statistics_accuracy(result.model(), data.test_images,
                                                data.test_labels, pipeline, batch_sizes)
    return {str(b): a for b, a in accuracy.items()}


@fact("alone-and-together", decode=lambda rows: pd.DataFrame(rows).T)
def alone_and_together(result: Result, data: CIFAR10, images: int = 16) -> pd.DataFrame:
    """Does an image's prediction depend on the rest of its batch? The model's logits for
    the first test image alone and inside a batch of the first ``images``, in evaluation
    and in training mode (fp32): per mode (rows), the ``largest change of a logit`` and
    whether the ``prediction changed``. Only batch norm's training mode mixes the batch."""
    model = result.model()
    x = Pipeline.for_config(result.config, data).inputs(data.test_images[:images]).float()
    rows = {}
    with torch.no_grad():
        for mode in ("eval", "train"):
            getattr(model, mode)()                  # train mode on this copy only
            alone, together = model(x[:1]), model(x)[:1]
            rows[f"{mode} mode"] = {
                "largest change of a logit": (alone - together).abs().max().item(),
                "prediction changed": bool(alone.argmax() != together.argmax())}
    return rows


@fact("c1-modes", decode=lambda rows: pd.DataFrame(rows).T.round(3))
def c1_modes(result: Result, data: CIFAR10, images: int = 32) -> pd.DataFrame:
    """Batch norm's three ways of normalizing, on what the first block's layer (C1) of a
    trained batch-norm model receives from the first ``images`` test images (fp32): in
    training mode within the batch, in training mode for the first image alone, and in
    evaluation mode with the running statistics. Per way (rows): the output's ``mean``
    and ``std`` for the first image, and its ``max |difference from evaluation|``
    (rounded to 3 digits)."""
    c1 = result.model().C1
    x = Pipeline.for_config(result.config, data).inputs(data.test_images[:images]).float()
    with torch.no_grad():
        received = c1.relu(c1.conv(x))                     # (images, C, 32, 32)
        bn = copy.deepcopy(c1.norm)        # a copy: training mode updates running statistics
        outputs = {f"training, in a batch of {images}": bn.train()(received)[:1],
                   "training, alone": bn.train()(received[:1]),
                   "evaluation (running statistics)": bn.eval()(received[:1])}
    reference = outputs["evaluation (running statistics)"]
    return {name: {"mean": out.mean().item(), "std": out.std().item(),
                   "max |difference from evaluation|": (out - reference).abs().max().item()}
            for name, out in outputs.items()}


def facts(results: Sequence[Result], data: dict[tuple, CIFAR10]) -> None:
    """Compute and store every fact the chapters read of the main models ``results``, each
    on the data it was trained on (``data`` by subset: :func:`normlab.book.runs.data_for`):
    each model's flip-averaged accuracy; for seed 0 of each norm, the activation statistics
    and shift gap and the train/evaluation demonstration; for seed 0 of batch norm, the
    accuracy with batch statistics and C1's three modes."""
    for r in results:
        own = data[(r.config.train_subset, r.config.test_subset)]
        flip_accuracy(r, own)
        if r.config.seed != 0:
            continue
        for over in ("channel", "sample"):
            activation_statistics(r, own, over)
        shift_gap(r, own)
        alone_and_together(r, own)
        if r.config.norm == "batch":
            batch_statistics(r, own)
            c1_modes(r, own)


def flip_summary(results: Sequence[Result], data: CIFAR10) -> pd.DataFrame:
    """Test accuracy (percent) per norm, single view and flip-averaged
    (:func:`flip_accuracy`): mean and standard deviation over the results (seeds,
    ``ddof=1``), and the mean gain of flip averaging (points)."""
    table = pd.DataFrame([{"norm": r.config.norm, "single view": 100 * r.test_accuracy,
                           "flip-averaged": 100 * flip_accuracy(r, data)} for r in results])
    table["gain"] = table["flip-averaged"] - table["single view"]
    summary = table.groupby("norm", sort=False).agg(["mean", "std"]).round(2)
    return summary.drop(columns=[("gain", "std")])


def published_sentence(margins: pd.Series, what: str, separator: str, lies: str) -> str:
    """Whether every seed beats the best published figure for its norm (``what``), from the
    ``margins`` (lowest seed minus published, points, per norm), as one sentence."""
    if (margins > 0).all():
        return (f"Every seed of every model beats the best published {what} for its norm"
                f"{separator} the {lies} seed lies {margins.min():.1f} to {margins.max():.1f} "
                f"points above it.")
    return (f"Not every seed beats the best published {what} for its norm{separator} the "
            f"{lies} seed lies {signed(margins.min())} to {signed(margins.max())} points from it.")


def comparison(profile: str | None = None) -> ChapterFacts:
    """What the comparison chapter shows of the main models: seed 0's accuracies, the
    summary over seeds and its verdicts, flip averaging, the published figures, per-class
    accuracy, shared mistakes, and the inputs of its figures (``runs``, ``seed0``: seed 0's
    result per norm, ``data``, ``spread``: shared mistakes across the test split)."""
    runs = results("main", profile)                 # the three norms, once per seed
    seed0 = by_norm(runs, seed=0)
    data = prepare_data(runs[0].config)
    values = {}
    table = accuracy_table(seed0.values()).set_index("norm")[["train accuracy (%)",
                                                               "test accuracy (%)"]]
    values["best"] = NORM_LABELS[table["test accuracy (%)"].idxmax()]
    values["gap"] = f"{table['test accuracy (%)'].max() - table['test accuracy (%)'].min():.1f}"
    values["provenance"] = provenance(runs)
    summary = seed_summary(runs)
    test = summary["test accuracy (%)"]
    for norm in seed0:
        values[f"{norm}_seeds"] = f"{test.loc[norm, 'mean']:.2f} ± {test.loc[norm, 'std']:.2f}%"
    values["seed_count"] = str(summary[("runs", "")].iloc[0])
    pairs = all_pairs(accuracies(runs))
    values["beyond_noise"] = pairs_beyond(pairs, empty="no pair of norms")
    values["pair_sentences"] = " ".join(d.sentence() for d in pairs)
    flip = flip_summary(runs, data)
    flipped = accuracies(runs, lambda r: flip_accuracy(r, data))
    single = accuracies(runs)
    values["flip_gains"] = " ".join(
        paired_sentence(flipped[label], single[label], f"{label} flip-averaged", "single view")
        for label in single)
    values["flip_beyond"] = pairs_beyond(all_pairs(flipped), empty="no pair of norms")
    against = against_published(runs, PUBLISHED_BEST)
    against["flip-averaged mean (%)"] = flip[("flip-averaged", "mean")]
    values["published_best"] = ", ".join(f"{NORM_LABELS[norm]} {accuracy}%"
                                         for norm, accuracy in PUBLISHED_BEST.items())
    values["published_source"] = PUBLISHED_SOURCE
    values["published_sentence"] = published_sentence(
        against["lowest seed - published (points)"], "figure", ":", "lowest")
    values["data_form"] = describe(data.identity)
    per_class = per_class_accuracy(seed0.values(), data.classes)
    values["hardest"] = ", ".join(f"{NORM_LABELS[n]}: {c}" for n, c in per_class.idxmin().items())
    shared = shared_mistakes(seed0.values())
    common = sorted(set.intersection(*wrong_sets(seed0.values()).values()))
    values["n_common"] = f"{shared.loc['all of them', 'wrong test images']:,}"
    values["n_independent"] = f"{shared.loc['all, if independent', 'wrong test images']:,}"
    spread = common[:: max(1, len(common) // 10)][:10]  # across the test split, sorted by class
    return ChapterFacts(values, {"accuracy": table, "seeds": summary, "flip": flip,
                                 "published": against, "per class": per_class,
                                 "shared": shared},
                        {"runs": runs, "seed0": list(seed0.values()), "data": data,
                         "spread": spread})


def activations(profile: str | None = None) -> ChapterFacts:
    """What the activations chapter shows of seed 0's main models: the shift gap per norm,
    the spread over images of the per-image std after each layer, and the inputs of its
    figures (``stats``: :func:`activation_statistics` by ``over`` and norm)."""
    seed0 = by_norm(results("main", profile), seed=0)
    data = prepare_data(seed0["batch"].config)
    stats = {over: {norm: activation_statistics(r, data, over) for norm, r in seed0.items()}
             for over in ("channel", "sample")}
    values = {"n_probe": f"{PROBE_IMAGES:,}", "provenance": provenance(seed0.values())}
    gaps = pd.Series({NORM_LABELS[n]: shift_gap(r, data) for n, r in seed0.items()},
                     name="median |channel mean after - beta_c|")
    values |= {f"gap_{norm}": f"{gap:.3f}" for norm, gap in gaps.items()}
    before = stats["channel"]["batch"].query("where == 'before'")
    values["min_mean_before"] = f"{before['mean'].min():.2f}"
    spread = pd.concat({NORM_LABELS[n]: t[t["where"] == "after"].groupby("layer", sort=False)["std"].std()
                        for n, t in stats["sample"].items()}, axis=1).T
    values |= {f"smpl_{norm}": f"{row.mean():.3f}" for norm, row in spread.iterrows()}
    spread.columns.name = "std over images of the per-image std, after the layer"
    return ChapterFacts(values, {"gaps": gaps.round(3).to_frame(), "sample spread": spread.round(3)},
                        {"stats": stats})


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
