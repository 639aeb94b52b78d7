"""Figures of the book, with matplotlib. Every function returns the Figure it draws.

Colours come from the Okabe & Ito (2008) palette, which stays distinguishable with the
common forms of colour blindness; each normalization keeps one colour throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

from ..data import CIFAR10, augment
from ..norms import NORM_LABELS, NORM_NAMES
from ..train import Config
from .runs import Mistake, Result
from .verdicts import Difference

#: Okabe-Ito colours, one per normalization.
NORM_COLORS = {"batch": "#0072B2", "layer": "#D55E00", "group": "#009E73",
               "instance": "#CC79A7", "none": "#000000", "frn": "#E69F00",
               "rms-group": "#56B4E9", "batch-renorm": "#999999"}
_NORM_BY_LABEL = {label: norm for norm, label in NORM_LABELS.items()}


def _as_image(image: torch.Tensor) -> np.ndarray:
    """uint8 (3, H, W) -> (H, W, 3) array for imshow."""
    return image.permute(1, 2, 0).cpu().numpy()


def plot_curves(results: Result | Sequence[Result], labels: Sequence[str] | None = None):
    """Loss and accuracy per epoch, one colour per norm: with several runs (seeds) of a
    norm, the mean over them as a line and their range as a band.

    Left panel: plain cross-entropy (nats per image), test (solid) and train (dashed; the
    running mean over each epoch's augmented batches, without the label smoothing the
    training objective adds). Right panel: accuracy (percent), test (solid) and train
    (dashed, measured the same way). ``labels`` names the norms in order of appearance
    (default :data:`normlab.NORM_LABELS`).
    """
    results = [results] if isinstance(results, Result) else list(results)
    by_norm: dict[str, list[Result]] = {}
    for result in results:
        by_norm.setdefault(result.config.norm, []).append(result)
    labels = labels or [NORM_LABELS[norm] for norm in by_norm]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for (norm, runs), label in zip(by_norm.items(), labels):
        color = NORM_COLORS[norm]
        seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        for ax, metric, scale, style, name in (
                (ax_loss, "test_loss", 1, "-", "test"),
                (ax_loss, "train_cross_entropy", 1, "--", "train"),
                (ax_acc, "test_accuracy", 100, "-", "test"),
                (ax_acc, "train_accuracy", 100, "--", "train")):
            values = scale * np.asarray([getattr(r.history, metric) for r in runs])
            epochs = np.arange(1, values.shape[1] + 1)
            ax.plot(epochs, values.mean(axis=0), style, color=color, marker=".",
                    label=f"{label}, {name}{seeds}")
            if len(runs) > 1:
                ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=color,
                                alpha=0.2, linewidth=0)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (nats per image)", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend(fontsize="small", loc="lower right")
    return fig


def plot_misclassified(mistakes: Sequence[Mistake], title: str | None = None, ncols: int = 5):
    """An annotated grid (2 x 5 for ten images): each image with its true label, the
    predicted label and the model's confidence in it (percent)."""
    nrows = -(-len(mistakes) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.45 * nrows),
                             layout="constrained", squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, mistakes):
        ax.imshow(_as_image(m.image), interpolation="nearest")
        ax.set_title(f"true: {m.true}\npredicted: {m.predicted}\n"
                     f"confidence {m.confidence:.0%}  (#{m.index})", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_samples(data: CIFAR10, per_class: int = 8):
    """The first ``per_class`` training images of every class, one row per class."""
    fig, axes = plt.subplots(len(data.classes), per_class,
                             figsize=(per_class * 0.9, len(data.classes) * 0.95),
                             layout="constrained")
    for label, row in enumerate(axes):
        index = torch.nonzero(data.train_labels == label).flatten()[:per_class]
        for ax, i in zip(row, index):
            ax.imshow(_as_image(data.train_images[i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(data.classes[label], rotation=0, ha="right", va="center")
    return fig


def plot_augmentation(images: torch.Tensor, versions: int = 5, seed: int = 0,
                      padding: int = Config.crop_padding,
                      padding_mode: str = Config.crop_padding_mode):
    """Each uint8 image (N, 3, H, W) in a row: the original, then ``versions`` random
    crops (``padding`` pixels of padding filled as ``padding_mode`` says) and flips made by
    :func:`normlab.augment`."""
    generator = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(len(images), versions + 1,
                             figsize=(1.3 * (versions + 1), 1.4 * len(images)),
                             layout="constrained", squeeze=False)
    columns = [images] + [augment(images, padding, generator=generator, padding_mode=padding_mode)
                          for _ in range(versions)]
    for j, batch in enumerate(columns):
        axes[0, j].set_title("original" if j == 0 else f"augmented {j}", fontsize=9)
        for i, image in enumerate(batch):
            axes[i, j].imshow(_as_image(image), interpolation="nearest")
            axes[i, j].axis("off")
    return fig


def plot_norm_axes(n: int = 4, c: int = 8, hw: int = 5, groups: int = 2):
    """The N-C-H,W cube of Wu & He (2018, Figure 2) for batch, layer, instance and group
    norm: the cells shaded in colour share one mean and variance."""
    selections = {
        "batch": (slice(None), slice(0, 1), slice(None)),
        "layer": (slice(0, 1), slice(None), slice(None)),
        "instance": (slice(0, 1), slice(0, 1), slice(None)),
        "group": (slice(0, 1), slice(0, c // groups), slice(None)),
    }
    fig = plt.figure(figsize=(13, 4.2), layout="constrained")
    for k, (norm, selection) in enumerate(selections.items()):
        ax = fig.add_subplot(1, 4, k + 1, projection="3d")
        filled = np.ones((n, c, hw), dtype=bool)
        colors = np.full(filled.shape, "#e8e8e8", dtype=object)
        colors[selection] = NORM_COLORS[norm]
        # axes: x = N (batch), y = C (channels), z = H, W (flattened spatial)
        ax.voxels(filled, facecolors=colors, edgecolor="#666666", linewidth=0.3)
        ax.set_xlabel("N (batch)", fontsize=11, labelpad=-8)
        ax.set_ylabel("C (channels)", fontsize=11, labelpad=-8)
        ax.set_zlabel("H, W", fontsize=11, labelpad=-8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_box_aspect((n, c, hw))
        ax.view_init(elev=22, azim=-58)
        name = NORM_LABELS[norm] + (f" ({groups} groups)" if norm == "group" else "")
        ax.set_title(name, fontsize=13)
    return fig


def plot_receptive_field(table: pd.DataFrame, image_size: int = 32):
    """Receptive field (input pixels, one axis) after each layer of a
    :func:`normlab.receptive_field` table, with the image size for reference."""
    rows = table[table.layer != "output"]
    names = [name.split(".")[-2] if name.endswith(".conv") else name for name in rows.layer]
    fields = [f if np.isscalar(f) else max(f) for f in rows.receptive_field]
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    ax.plot(range(len(fields)), fields, "o-", color=NORM_COLORS["batch"], label="receptive field")
    ax.axhline(image_size, color="#999999", linestyle=":", label=f"image size ({image_size} px)")
    for x, f in enumerate(fields):
        ax.annotate(str(f), (x, f), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(xlabel="layer", ylabel="receptive field (pixels)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _confusion(result: Result, k: int) -> torch.Tensor:
    """Row-normalized confusion matrix (percent of each true class), (k, k)."""
    predicted = result.test_probs.argmax(dim=1)
    matrix = torch.zeros(k, k).index_put_((result.test_labels, predicted),
                                          torch.ones(len(predicted)), accumulate=True)
    return 100 * matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)


def _matrix(ax, matrix: torch.Tensor, classes: Sequence[str], title: str, difference: bool):
    k = len(classes)
    limit = max(1.0, matrix.abs().max().item()) if difference else 100
    ax.imshow(matrix.numpy(), cmap="RdBu_r" if difference else "cividis",
              vmin=-limit if difference else 0, vmax=limit)
    for i in range(k):
        for j in range(k):
            value = matrix[i, j].item()
            dark = abs(value) > limit / 2 if difference else value < 50
            ax.text(j, i, f"{value:+.0f}" if difference else f"{value:.0f}", ha="center",
                    va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)


def plot_confusion(results: Sequence[Result], classes: Sequence[str]):
    """The first result's row-normalized confusion matrix (percent of each true class),
    then each other result's minus it (points; red: more often than the first, blue: less),
    so that what the models do differently stands out."""
    reference = _confusion(results[0], len(classes))
    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.4),
                             layout="constrained", squeeze=False)
    first = NORM_LABELS[results[0].config.norm]
    _matrix(axes[0][0], reference, classes, f"{first} (% of true class)", difference=False)
    for ax, result in zip(axes[0][1:], results[1:]):
        _matrix(ax, _confusion(result, len(classes)) - reference, classes,
                f"{NORM_LABELS[result.config.norm]} minus {first} (points)", difference=True)
    return fig


def plot_predictions(results: Sequence[Result], indices: Sequence[int], data: CIFAR10,
                     ncols: int = 5):
    """The same test images (by index) for several models: each image with its true label
    and every model's prediction and confidence, a wrong prediction in red."""
    nrows = -(-len(indices) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, (1.6 + 0.38 * len(results))
                                                    * nrows), layout="constrained", squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, indices):
        ax.imshow(_as_image(data.test_images[index]), interpolation="nearest")
        true = int(data.test_labels[index])
        ax.set_title(f"#{index}: {data.classes[true]}", fontsize=9)
        for row, result in enumerate(results):
            confidence, predicted = result.test_probs[index].max(dim=0)
            ax.text(0.5, -0.08 - 0.16 * row,
                    f"{NORM_LABELS[result.config.norm]}: {data.classes[int(predicted)]} "
                    f"{confidence.item():.0%}", transform=ax.transAxes, ha="center", va="top",
                    fontsize=8, color="#B00020" if int(predicted) != true else "black")
    return fig


def plot_effects(effects: dict[str, dict[str, Difference]], yardstick: float | None = None):
    """A dot plot of single-run effects: one row per change (the keys), one dot per norm
    with its 95% interval, in points of test accuracy; with ``yardstick`` (points), a grey
    band of +- it around zero, where a difference is within the noise."""
    changes = list(effects)
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(changes) + 1.2), layout="constrained")
    if yardstick is not None:
        ax.axvspan(-yardstick, yardstick, color="#dddddd", label="within the noise")
    ax.axvline(0, color="#888888", linewidth=0.8)
    norms = list(dict.fromkeys(label for by_norm in effects.values() for label in by_norm))
    for n, label in enumerate(norms):
        offset = 0.22 * (n - (len(norms) - 1) / 2)
        rows = [(y, d) for y, change in enumerate(changes)
                if (d := effects[change].get(label)) is not None]
        ax.errorbar([d.difference for _, d in rows], [y + offset for y, _ in rows],
                    xerr=[[d.difference - d.low for _, d in rows],
                          [d.high - d.difference for _, d in rows]],
                    fmt="o", markersize=4, capsize=2, linewidth=0.8, label=label,
                    color=NORM_COLORS[_NORM_BY_LABEL[label]])
    ax.set_yticks(range(len(changes)), changes)
    ax.invert_yaxis()
    ax.set(xlabel="change in test accuracy (points), with its 95% interval")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_seed_accuracies(results: Sequence[Result]):
    """Final test accuracy (percent) of every run, one column of dots per norm (one dot
    per seed) with its mean as a bar: the book's main result at a glance."""
    fig, ax = plt.subplots(figsize=(5.6, 3.2), layout="constrained")
    by_norm: dict[str, list[float]] = {}
    for r in results:
        by_norm.setdefault(r.config.norm, []).append(100 * r.test_accuracy)
    for x, (norm, values) in enumerate(by_norm.items()):
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
        ax.scatter(x + np.asarray(jitter), values, color=NORM_COLORS[norm], zorder=3,
                   label="one seed" if x == 0 else None)
        ax.hlines(np.mean(values), x - 0.3, x + 0.3, color=NORM_COLORS[norm], linewidth=2,
                  label="mean" if x == 0 else None)
    ax.set_xticks(range(len(by_norm)), [NORM_LABELS[n] for n in by_norm])
    ax.set(ylabel="test accuracy (%)", xlim=(-0.6, len(by_norm) - 0.4))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_batch_size_sweep(results: Sequence[Result], noise: float | None = None):
    """Test error (percent) against the training batch size (log scale), one line per
    norm in the book's order (:data:`normlab.NORM_NAMES`): the layout of Wu & He 2018,
    Figure 1. With ``noise`` (points), each point gets an error bar of +- ``noise``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    by_norm: dict[str, list[Result]] = {}
    for result in sorted(results, key=lambda r: NORM_NAMES.index(r.config.norm)):
        by_norm.setdefault(result.config.norm, []).append(result)
    for norm, runs in by_norm.items():
        runs = sorted(runs, key=lambda r: r.config.batch_size)
        ax.errorbar([r.config.batch_size for r in runs],
                    [100 * (1 - r.test_accuracy) for r in runs], yerr=noise, capsize=3,
                    marker="o", color=NORM_COLORS[norm], label=NORM_LABELS[norm])
    sizes = sorted({r.config.batch_size for r in results})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set(xlabel="batch size (images per step)", ylabel="test error (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_activation_statistics(stats: dict[str, pd.DataFrame], over: str = "channel"):
    """What each normalization does to the activations it receives.

    ``stats`` maps a norm to its :func:`normlab.probes.activation_statistics` table. One
    row of panels per norm; left the means, right the standard deviations of each
    ``over`` unit (one dot per channel or sample), before (grey) and after (the norm's
    colour) each layer's normalization.
    """
    fig, axes = plt.subplots(len(stats), 2, figsize=(9, 2.6 * len(stats)),
                             layout="constrained", sharex=True, squeeze=False)
    rng = np.random.default_rng(0)
    for row, (norm, table) in enumerate(stats.items()):
        layers = list(dict.fromkeys(table["layer"]))
        for column, value in enumerate(("mean", "std")):
            ax = axes[row, column]
            for where, shift, color in (("before", -0.18, "#999999"),
                                        ("after", 0.18, NORM_COLORS[norm])):
                part = table[table["where"] == where]
                x = part["layer"].map(layers.index).to_numpy() + shift
                ax.scatter(x + rng.uniform(-0.1, 0.1, len(x)), part[value], s=5,
                           color=color, alpha=0.6, label=where, rasterized=True)
            ax.set_xticks(range(len(layers)), layers)
            ax.set(ylabel=f"{value} per {over}", title=f"{NORM_LABELS[norm]}: {value}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small", markerscale=3, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("layer")
    return fig


def _by_norm(results: Sequence[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for r in sorted(results, key=lambda r: NORM_NAMES.index(r.config.norm)):
        groups.setdefault(r.config.norm, []).append(r)
    return groups


def plot_against(results: Sequence[Result], field: str, xlabel: str, log: bool = False,
                 noise: float | None = None):
    """Final test accuracy (percent) against the config field ``field`` (``lr``,
    ``epochs``), one line per norm in the book's order: the mean over the runs that share
    a value, with ``noise`` (points) as error bars; a run that diverged is drawn as a
    cross at its (chance-level) accuracy and left out of the line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for norm, runs in _by_norm(results).items():
        color = NORM_COLORS[norm]
        values = sorted({getattr(r.config, field) for r in runs})
        kept = [(v, [100 * r.test_accuracy for r in runs
                     if getattr(r.config, field) == v and not r.diverged]) for v in values]
        kept = [(v, np.mean(a)) for v, a in kept if a]
        ax.errorbar([v for v, _ in kept], [a for _, a in kept], yerr=noise, capsize=3,
                    marker="o", color=color, label=NORM_LABELS[norm])
        diverged = [r for r in runs if r.diverged]
        ax.scatter([getattr(r.config, field) for r in diverged],
                   [100 * r.test_accuracy for r in diverged], marker="x", s=60, color=color,
                   label=f"{NORM_LABELS[norm]}, diverged" if diverged else None)
    if log:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_shift(table: pd.DataFrame):
    """Test accuracy (percent) under each shift of :func:`normlab.book.parts.shift.shift_table`
    against its severity (0: the clean images), one panel per shift, one line per norm
    (mean over seeds), batch norm with re-estimated statistics dashed."""
    shifts = [s for s in table["shift"].unique() if s != "clean"]
    clean = table[table["shift"] == "clean"]
    fig, axes = plt.subplots(1, len(shifts), figsize=(3.0 * len(shifts), 3.2),
                             layout="constrained", sharey=True, squeeze=False)
    for ax, name in zip(axes[0], shifts):
        part = pd.concat([clean, table[table["shift"] == name]])
        for (norm, adapted), rows in part.groupby(["norm", "adapted"], sort=False):
            mean = rows.groupby("severity")["accuracy"].mean()
            ax.plot(mean.index, mean.to_numpy(), "--" if adapted else "-", marker="o",
                    color=NORM_COLORS[norm],
                    label=NORM_LABELS[norm] + (", re-estimated" if adapted else ""))
        ax.set(title=name, xlabel="severity", xticks=[0, 1, 2, 3])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize="small")
    return fig


def plot_smoothness(probes: dict[str, pd.DataFrame]):
    """The smoothness probes of :func:`normlab.book.smoothness.smoothness` along training,
    one line per norm (the keys): left the loss range along the gradient (nats), right the
    effective beta-smoothness, both on a log scale (Santurkar et al. 2018, Figure 4)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for norm, table in probes.items():
        for ax, column in zip(axes, ("loss_range", "beta")):
            ax.plot(table["step"], table[column], color=NORM_COLORS[norm], linewidth=1,
                    label=NORM_LABELS[norm])
    for ax, title in zip(axes, ("loss range along the gradient (nats)",
                                "effective beta-smoothness")):
        ax.set(xlabel="training step", yscale="log", title=title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="small")
    return fig
