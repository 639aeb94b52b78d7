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

from ..store import atomic_write_json
from ..train import Pipeline, predict
from .cache import results_dir
from .probes import reestimate_batch_statistics
from .runs import Result, resolve_profile

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
