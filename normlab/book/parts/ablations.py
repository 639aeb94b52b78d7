"""The ablations part: what its chapter shows (:func:`chapter`), and the effects that the
answer quotes too (:func:`residual_effects`, :func:`order_effects`). Beyond the records, as
stored facts (:func:`normlab.book.facts.fact`): how much instance norm leaves of the images
after pooling in each order, and how zero-padded crops move the statistics that layer norm
normalizes with."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ...data import CIFAR10, augment
from ...norms import NORM_LABELS
from ...train import Pipeline
from .. import probes
from ..facts import fact
from ..report import ChapterFacts, accuracy_by, effects, provenance, run_to_run_noise, seed_summary
from ..runs import Result, prepare_data, run, run_each
from ..studies import BOOK_NORMS, RECIPE_CHANGES, ablations, book_config
from ..verdicts import against_noise, listing, moves, signed
from .main import batch_statistics

#: Test images whose pooled features are compared (one batch).
POOLED_IMAGES = 256
#: Training images cropped both ways for :func:`padding_shift`.
PADDING_IMAGES = 512


@fact("pooled-spread")
def pooled_spread(result: Result, data: CIFAR10, images: int = POOLED_IMAGES) -> float:
    """The largest standard deviation over the first ``images`` test images of a feature
    after global average pooling (``C1`` ... ``GAP`` of ``result``'s model, fp32): near 0
    where every image reaches the classifier as the same vector."""
    pipeline = Pipeline.for_config(result.config, data)
    up_to_pooling = torch.nn.Sequential(*list(result.model().children())[:-2])
    with torch.no_grad():
        pooled = up_to_pooling(pipeline.inputs(data.test_images[:images]).float()).flatten(1)
    return pooled.std(dim=0).max().item()                                   # over (N, C)


@fact("padding-shift", decode=lambda shift: pd.DataFrame(shift).rename_axis("layer"))
def padding_shift(result: Result, data: CIFAR10, images: int = PADDING_IMAGES) -> pd.DataFrame:
    """How far a random crop moves the per-image mean of each norm layer's input, with the
    border filled with zeros or mirrored: the first ``images`` training images of
    ``data``, cropped with the config's padding (seed 0, no flip), against the uncropped
    images, |change of the mean| / the uncropped std per (layer, image), median per layer.
    Columns ``zeros`` and ``mirrored``, one row per layer."""
    pipeline = Pipeline.for_config(result.config, data)
    model, sample = result.model(), data.train_images[:images]

    def inputs_per_image(images):
        stats = probes.activation_statistics(model, images, pipeline, over="sample")
        return stats[stats["where"] == "before"].set_index(["layer", "unit"])

    whole = inputs_per_image(sample)
    shift = {}
    for mode, name in (("constant", "zeros"), ("reflect", "mirrored")):
        crops = augment(sample, result.config.crop_padding, flip=False,
                        generator=torch.Generator().manual_seed(0), padding_mode=mode)
        moved = (inputs_per_image(crops)["mean"] - whole["mean"]).abs() / whole["std"]
        shift[name] = moved.groupby("layer", sort=False).median().to_dict()
    return shift


def instance_by_order(results: Sequence[Result]) -> dict[str, Result]:
    """The instance-norm models of the order ablation among ``results``, by order."""
    return {r.config.order: r for r in results if r.config.norm == "instance"}


def zero_padded_layer(results: Sequence[Result]) -> Result:
    """The layer-norm model trained with zero-padded crops among ``results``.

    Raises:
        LookupError: there is none (it is not trained yet): the message says so.
    """
    found = next((r for r in results if r.config.norm == "layer"
                  and r.config.crop_padding_mode == "constant"), None)
    if found is None:
        raise LookupError("No layer-norm model trained with zero-padded crops among the "
                          "ablations' results: train the part (`python -m normlab reproduce "
                          "--parts ablations`).")
    return found


def facts(results: Sequence[Result], data: dict[tuple, CIFAR10]) -> None:
    """Compute and store every fact the ablations chapter reads of ``results`` (the
    ablations part), each on the data it was trained on (``data`` by subset)."""
    def own(r: Result) -> CIFAR10:
        return data[(r.config.train_subset, r.config.test_subset)]

    for r in instance_by_order(results).values():
        pooled_spread(r, own(r))
    padded = zero_padded_layer(results)
    padding_shift(padded, own(padded))


def ablation_results(profile: str | None = None) -> dict[str, list[Result]]:
    """The results of each ablation (:func:`normlab.book.studies.ablations`), by name."""
    return {name: run_each(configs, profile=profile) for name, configs in ablations(profile).items()}


def noise(runs: dict[str, list[Result]]) -> tuple[float, int]:
    """The seeds' noise in the studies' setting: :func:`normlab.book.report.run_to_run_noise`
    of the ``seeds`` ablation of ``runs`` (:func:`ablation_results`)."""
    return run_to_run_noise(runs["seeds"])


def residual_effects(runs: dict[str, list[Result]], noise_: tuple[float, int]) -> dict:
    """Per norm label: the test accuracy without the residual additions minus with them,
    judged with ``noise_`` (:func:`normlab.book.report.effects`)."""
    return effects([r for r in runs["residual"] if not r.config.residual],
                   [r for r in runs["residual"] if r.config.residual], noise_)


def order_effects(runs: dict[str, list[Result]], noise_: tuple[float, int]) -> dict:
    """Per norm label: the test accuracy normalizing before the ReLU (conv-norm-relu)
    minus after it (conv-relu-norm, the assignment's order), judged with ``noise_``."""
    return effects([r for r in runs["order"] if r.config.order == "conv-norm-relu"],
                   [r for r in runs["order"] if r.config.order == "conv-relu-norm"], noise_)


def recipe_effects(runs: dict[str, list[Result]], noise_: tuple[float, int]) -> dict:
    """Per change of :data:`normlab.book.studies.RECIPE_CHANGES` but the study recipe, per
    norm label: the test accuracy with the change minus without, judged with ``noise_``."""
    per_change = len(BOOK_NORMS)
    by_change = {change: runs["recipe"][k * per_change:(k + 1) * per_change]
                 for k, change in enumerate(RECIPE_CHANGES)}
    return {change: effects(changed, by_change["study recipe"], noise_)
            for change, changed in by_change.items() if change != "study recipe"}


def _vs(table: pd.DataFrame, changed, unchanged) -> pd.DataFrame:
    """``table`` with a column ``difference (points)``: ``changed`` minus ``unchanged``."""
    table["difference (points)"] = table[changed] - table[unchanged]
    return table


def chapter(profile: str | None = None) -> ChapterFacts:
    """What the ablations chapter shows: the seeds' noise, the residual, order, groups and
    recipe ablations with their verdicts, the pooled features of instance norm, the crops'
    padding, and batch statistics (:func:`normlab.book.parts.main.batch_statistics`);
    ``inputs``: ``effects`` (:func:`recipe_effects`) and ``yardstick`` for the figure."""
    runs = ablation_results(profile)
    setting = runs["residual"][0].config
    data = prepare_data(setting)
    noise_ = noise(runs)
    yardstick = against_noise([0.0], [0.0], *noise_).high
    every = [r for rs in runs.values() for r in rs]
    values = {"ablation_setting": f"{len(data.train_labels):,} training images, {setting.epochs} "
                                  f"epochs, batch size {setting.batch_size}, peak learning rate "
                                  f"{setting.lr:g}",
              "ablation_minutes": f"{pd.Series([r.seconds for r in every]).median() / 60:.1f}",
              "noise_sd": f"{noise_[0]:.2f}", "noise_df": str(noise_[1]),
              "yardstick": f"{yardstick:.2f}",
              "seed_count": str(len({r.config.seed for r in runs["seeds"]})),
              "provenance": provenance(every)}
    tables = {"seeds": seed_summary(runs["seeds"]).rename(index=NORM_LABELS).round(2)}

    residual = accuracy_by(runs["residual"], "residual").rename(index=NORM_LABELS)
    residual.columns = [{True: "with additions", False: "without"}[c] for c in residual.columns]
    residual = _vs(residual, "with additions", "without")
    values |= {f"residual_{norm}": signed(row["difference (points)"])
               for norm, row in residual.iterrows()}
    values["residual_verdict"] = moves(residual_effects(runs, noise_),
                                       "without the additions the test accuracy")
    order = _vs(accuracy_by(runs["order"], "order").rename(index=NORM_LABELS),
                "conv-norm-relu", "conv-relu-norm")
    values |= {f"order_{norm}": signed(row["difference (points)"]) for norm, row in order.iterrows()}
    values["order_verdict"] = moves(order_effects(runs, noise_),
                                    "normalizing before the ReLU, the test accuracy")
    values["instance_after_relu"] = f"{order.loc['InstanceNorm', 'conv-relu-norm']:.1f}"
    values["instance_before_relu"] = f"{order.loc['InstanceNorm', 'conv-norm-relu']:.1f}"
    tables |= {"residual": residual.round(2), "order": order.round(2)}

    spread = {o: pooled_spread(r, data) for o, r in instance_by_order(runs["order"]).items()}
    values["pooled_spread"] = f"{spread['conv-relu-norm']:.1e}"
    tables["pooled"] = pd.Series(spread, name="largest std over images of a pooled feature").to_frame()

    groups = pd.DataFrame([{"groups": "C (InstanceNorm)" if r.config.norm == "instance"
                            else str(r.config.groups),
                            "test accuracy (%)": round(100 * r.test_accuracy, 2)}
                           for r in runs["groups"]]).set_index("groups")
    values["best_groups"] = groups["test accuracy (%)"].iloc[:-1].idxmax()
    layer = next(r for r in runs["order"]
                 if r.config.norm == "layer" and r.config.order == "conv-relu-norm")
    values["groups_one_is_layer"] = ("identical to" if layer.test_accuracy
                                     == runs["groups"][0].test_accuracy else "different from")
    by_groups = groups["test accuracy (%)"].iloc[:-1]           # instance norm left out
    values["groups_spread"] = f"{by_groups.max() - by_groups.min():.1f}"
    tables["groups"] = groups.T

    recipe_values, tables["recipe"], effects_ = _recipe(runs, noise_)
    values |= recipe_values
    tables["own choices"] = pd.DataFrame(
        {change: {norm: f"{d.difference:+.2f} ({d.low:+.2f} to {d.high:+.2f})"
                  for norm, d in effects_[change].items()} for change in OWN_CHOICES}
    ).T.rename_axis("change (points, 95% interval)")

    shift = padding_shift(zero_padded_layer(runs["recipe"]), data)
    times = shift["zeros"] / shift["mirrored"]
    values |= {"shift_images": str(PADDING_IMAGES),
               "shift_zeros_C1": f"{shift.loc['C1', 'zeros']:.3f}",
               "shift_mirrored_C1": f"{shift.loc['C1', 'mirrored']:.3f}",
               "shift_times": f"{times.min():.1f} to {times.max():.0f}"}
    tables["padding"] = shift.round(3)

    main = run(book_config("batch", profile), profile=profile)
    batch_stats = batch_statistics(main, prepare_data(main.config))
    values |= {"bn_running": f"{100 * main.test_accuracy:.2f}",
               "bn_batch_1": f"{batch_stats[1]:.2f}", "bn_batch_1000": f"{batch_stats[1000]:.2f}",
               "bn_chance": ("chance level" if abs(batch_stats[1] - 10) < 0.5
                             else "far below the running statistics")}
    tables["batch statistics"] = batch_stats.round(2).to_frame(
        "test accuracy with batch statistics (%)").T
    return ChapterFacts(values, tables, {"effects": effects_, "yardstick": yardstick})


#: The recipe changes that test the book's own choices, and the glue names of their verdicts.
OWN_CHOICES = {"zero-padded crops": "zeros", "crop padding 4": "wider", "batch size 256": "batch_256"}


def _recipe(runs: dict[str, list[Result]], noise_: tuple[float, int]):
    """The recipe ablation: its values (verdicts, the largest change, the train-test gaps),
    its table (test accuracy per change and norm, with the difference from the study recipe,
    and the parameters) and its effects (:func:`recipe_effects`)."""
    changes, norms = list(RECIPE_CHANGES), [NORM_LABELS[n] for n in BOOK_NORMS]
    recipe = pd.DataFrame([{"change": change, "norm": NORM_LABELS[r.config.norm],
                            "parameters": r.parameters, "test": 100 * r.test_accuracy,
                            "train": 100 * r.train_accuracy}
                           for change, r in zip([ch for ch in changes for _ in norms],
                                                runs["recipe"])])
    accuracy, train = (recipe.pivot(index="change", columns="norm", values=v).loc[changes, norms]
                       for v in ("test", "train"))
    difference = accuracy - accuracy.loc["study recipe"]
    gap = train - accuracy  # train minus test accuracy, points
    effects_ = recipe_effects(runs, noise_)

    def changes_where(test) -> str:
        return listing([f"“{c}”" for c, ds in effects_.items() if test(list(ds.values()))], "none")

    values = {"recipe_costs": changes_where(lambda ds: any(d.beyond_noise and d.difference < 0 for d in ds)),
              "recipe_gains": changes_where(lambda ds: any(d.beyond_noise and d.difference > 0 for d in ds)),
              "recipe_neutral": changes_where(lambda ds: not any(d.beyond_noise for d in ds)),
              "recipe_largest": f"“{difference.iloc[1:].abs().mean(axis=1).idxmax()}”"}
    values |= {f"no_augment_{norm}": signed(difference.loc["no augmentation", norm]) for norm in norms}
    for change, name in (("study recipe", "gap_recipe"), ("no augmentation", "gap_no_augment")):
        values[name] = f"{gap.loc[change].min():.1f}-{gap.loc[change].max():.1f}"
    values["book_padding"] = str(book_config().crop_padding)
    values |= {f"{name}_verdict": moves(effects_[change]) for change, name in OWN_CHOICES.items()}
    values["main_batch_size"] = str(book_config().batch_size)
    table = accuracy.map(lambda a: f"{a:.2f}") + difference.map(lambda d: f" ({d:+.2f})")
    table.loc["study recipe"] = accuracy.loc["study recipe"].map(lambda a: f"{a:.2f}")
    table["parameters"] = recipe.groupby("change")["parameters"].first()
    return values, table, effects_
