"""Distribution shift: the test images re-encoded or corrupted, computed in code.

The corruptions are inspired by CIFAR-10-C (Hendrycks & Dietterich 2019) but not its
code or severities: made with torchvision's image functions, three severities each
(brightness here multiplies the pixels, where CIFAR-10-C adds to the HSV value); ``jpeg``
re-encodes the images at decreasing JPEG quality (quality 75 is how the JPEG re-encoded
copy of CIFAR-10 beside this project was made). :func:`shifted_accuracy` tests a model on
them, for batch norm optionally with its statistics re-estimated on the shifted images
(test-time adaptation, Schneider et al. 2020); :func:`shift_table` tests every model under
every shift, and keeps each model's accuracies in the results folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as TF

from ...norms import NORM_LABELS
from ...store import atomic_write_json
from ...train import Pipeline, predict
from ..cache import results_dir
from ..probes import reestimate_batch_statistics
from ..report import ChapterFacts, provenance
from ..runs import Result, prepare_data, resolve_profile
from ..studies import SHIFT_SEEDS, results
from ..verdicts import all_pairs, listing, moves, paired, pairs_beyond, welch

#: The three severities of each shift, mildest first, in the units of its parameter.
SEVERITIES = {
    "gaussian noise": (0.04, 0.08, 0.12),    # standard deviation, fraction of the range
    "blur": (0.5, 1.0, 1.5),                 # Gaussian blur's standard deviation, pixels
    "contrast": (0.6, 0.35, 0.15),           # contrast factor (1 = unchanged)
    "brightness": (1.3, 1.6, 1.9),           # brightness factor (1 = unchanged)
    "jpeg": (90, 75, 50),                    # JPEG quality
}
SHIFTS = tuple(SEVERITIES)


def _noise(images: torch.Tensor, sd: float, generator: torch.Generator) -> torch.Tensor:
    noisy = images / 255 + sd * torch.randn(images.shape, generator=generator)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    return torch.stack([decode_jpeg(encode_jpeg(image, quality=quality)) for image in images])


_APPLY: dict[str, Callable] = {
    "gaussian noise": lambda x, v, g: _noise(x, v, g),
    # the kernel reaches 3 standard deviations either side, where the Gaussian is ~0
    "blur": lambda x, v, g: TF.gaussian_blur(x, kernel_size=2 * math.ceil(3 * v) + 1, sigma=v),
    "contrast": lambda x, v, g: TF.adjust_contrast(x, v),
    "brightness": lambda x, v, g: TF.adjust_brightness(x, v),
    "jpeg": lambda x, v, g: _jpeg(x, v),
}


def shift(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (uint8 (N, 3, H, W)) under the shift ``name`` (one of :data:`SHIFTS`) at
    ``severity`` 1, 2 or 3 (:data:`SEVERITIES`); random parts (the noise) drawn from
    ``seed``. Returns uint8 images of the same shape.

    Raises:
        ValueError: an unknown shift or severity, or images that are not uint8
            (N, 3, H, W) on the CPU.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or (
            images.device.type != "cpu"):
        raise ValueError(f"shift takes uint8 images (N, 3, H, W) on the CPU, as CIFAR10 holds "
                         f"them; got {images.dtype} {tuple(images.shape)} on {images.device}.")
    if name not in SEVERITIES:
        raise ValueError(f"Unknown shift {name!r}. Valid values are {', '.join(SHIFTS)}.")
    if severity not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {severity!r}.")
    generator = torch.Generator().manual_seed(seed)
    return _APPLY[name](images, SEVERITIES[name][severity - 1], generator)


def shifted_accuracy(result: Result, images: torch.Tensor, labels: torch.Tensor,
                     pipeline: Pipeline, adapt: bool = False) -> float:
    """Test accuracy (percent) of ``result``'s model on ``images`` (uint8, already
    shifted) with ``labels``; with ``adapt``, its batch-norm statistics are first
    re-estimated on those images (:func:`normlab.book.probes.reestimate_batch_statistics`)."""
    model = result.model()
    if adapt:
        model = reestimate_batch_statistics(model, images, pipeline)
    return 100 * (predict(model, images, pipeline).argmax(dim=1) == labels).float().mean().item()


def shift_path(result: Result, profile: str | None = None) -> Path:
    """Where :func:`shift_table` keeps ``result``'s accuracies:
    ``results_dir()/<profile>/shift-<norm>-<key>.json``, keyed like the model itself."""
    return (results_dir() / resolve_profile(profile) /
            f"shift-{result.config.norm}-{result.info['key']}.json")


def _stamp(result: Result) -> dict:
    """What a model's rows were computed from: the model's own record (a model trained
    again has another training time) and the severities of the shifts."""
    return {"model": {"test_accuracy": result.test_accuracy, "seconds": result.seconds},
            "severities": json.loads(json.dumps(SEVERITIES))}


def shift_found(result: Result, profile: str | None = None) -> bool:
    """Whether :func:`shift_path` holds ``result``'s rows, computed from this model under
    these severities."""
    path = shift_path(result, profile)
    if not path.exists():
        return False
    stored = json.loads(path.read_text())
    return all(stored.get(k) == v for k, v in _stamp(result).items())


def shift_table(results: list[Result], images: torch.Tensor, labels: torch.Tensor,
                pipeline: Pipeline, profile: str | None = None,
                retrain: bool = False) -> pd.DataFrame:
    """Test accuracy (percent) of every result on the clean images and under every shift
    and severity; batch-norm models also with their statistics re-estimated on each shifted
    set (``adapted``). ``images`` and ``labels`` are the results' own test split. Each
    model's rows are read from :func:`shift_path` (:func:`shift_found`), or computed and
    written there (atomically; always with ``retrain``). Columns ``norm``, ``seed``,
    ``adapted``, ``shift``, ``severity`` (0 for the clean images) and ``accuracy``."""
    missing = [r for r in results if retrain or not shift_found(r, profile)]
    if missing:
        sets = {("clean", 0): images} | {(name, s): shift(images, name, s)
                                          for name in SHIFTS for s in (1, 2, 3)}
    for r in missing:
        rows = [{"norm": r.config.norm, "seed": r.config.seed, "adapted": adapt,
                 "shift": name, "severity": severity,
                 "accuracy": shifted_accuracy(r, shifted, labels, pipeline, adapt)}
                for adapt in ((False, True) if r.config.norm == "batch" else (False,))
                for (name, severity), shifted in sets.items()]
        atomic_write_json({"config": json.loads(json.dumps(asdict(r.config))), **_stamp(r),
                           "rows": rows}, shift_path(r, profile))
    return pd.DataFrame([row for r in results
                         for row in json.loads(shift_path(r, profile).read_text())["rows"]])


def shift_drops(table: pd.DataFrame) -> pd.DataFrame:
    """From :func:`normlab.book.parts.shift.shift_table`: each model's drop of test accuracy
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
    """From :func:`normlab.book.parts.shift.shift_table` (at least two seeds per norm), as
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


def chapter(profile: str | None = None) -> ChapterFacts:
    """What the shift chapter shows: the severities of each shift (``severities``), the
    sentences of :func:`shift_summary` (as ``shift_<key>``), and the figure's input
    (``table``: :func:`shift_table` of the shift part's models)."""
    runs = results("shift", profile)   # the main models of the shift seeds
    data = prepare_data(runs[0].config)
    table = shift_table(runs, data.test_images, data.test_labels,
                        Pipeline.for_config(runs[0].config, data), profile)
    values = {"shift_seeds": str(len(SHIFT_SEEDS)), "provenance": provenance(runs)}
    values |= {f"shift_{key}": sentence for key, sentence in shift_summary(table).items()}
    severities = pd.DataFrame({name: [str(v) for v in values_] for name, values_ in SEVERITIES.items()},
                              index=["severity 1", "severity 2", "severity 3"]).T
    return ChapterFacts(values, {"severities": severities}, {"table": table})
