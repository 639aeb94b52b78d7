"""Where results live and how a run's result is found again: the cache key.

A result is stored as ``<norm>-<key>.json`` (config, per-epoch history, final accuracies,
seconds, where it ran) and ``<norm>-<key>.pt`` (weights and test predictions) under
``results_dir()/<profile>/``. The key is a hash of everything that determines the numbers:
the recipe (:class:`normlab.Config`), the profile, the data's identity, the package
version (bumped whenever a change alters the numbers), the revision of the norm layer
(:data:`NORM_REVISIONS`), the device type and the precision.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..data import CIFAR10
from ..store import cache_dir
from ..train import Config, choose_device, choose_precision

RESULTS_ENV = "NORMLAB_RESULTS"

#: Revision of a layer's numerics, per scheme: a change to a layer that alters trained
#: numbers bumps its revision, so that exactly the runs that use it are trained again;
#: schemes not listed are at revision 1 and add nothing to the key.
NORM_REVISIONS = {"group": 3}   # 3: GroupNorm computes channels_last input in NCHW on CPU
#: Fields added to :class:`normlab.Config` after results were first cached, each with the
#: value that computes what every run did before the field existed: at that value a field
#: adds nothing to the key, so the results cached before it are still found.
_ADDED_FIELDS = {"crop_padding_mode": "constant"}


def results_dir() -> Path:
    """Folder for training results (created on demand): ``$NORMLAB_RESULTS``, else the
    ``results/`` folder of a source checkout (committed), else ``results/`` in
    :func:`normlab.store.cache_dir`."""
    checkout = Path(__file__).resolve().parents[2]
    default = (checkout / "results" if (checkout / "pyproject.toml").exists()
               else cache_dir() / "results")
    path = Path(os.environ.get(RESULTS_ENV) or default).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def benchmark_records() -> list[dict]:
    """The throughput benchmark's records committed in ``results/benchmarks/``
    (``benchmarks/throughput.py --output``), oldest first."""
    return [json.loads(path.read_text())
            for path in sorted((results_dir() / "benchmarks").glob("throughput-*.json"))]


def environment(config: Config, device: str | torch.device = "auto") -> dict:
    """What besides the recipe determines a result's numbers: the device type, the
    precision ``config`` resolves to there, the package version and, where the scheme has
    one, its layer's revision."""
    device = choose_device(str(device))
    dtype = choose_precision(config.precision, device)
    revision = ({"norm_revision": NORM_REVISIONS[config.norm]}
                if config.norm in NORM_REVISIONS else {})
    return {"device": device.type, "precision": str(dtype).removeprefix("torch."),
            "normlab": __version__, **revision}


def cache_key(config: Config, data: CIFAR10, profile: str,
              device: str | torch.device = "auto") -> str:
    """Hex digest (16 characters) of everything that determines the result of ``config`` on
    ``data`` in ``profile`` on ``device``."""
    determining = asdict(config)
    del determining["precision"]            # in the key as the dtype it resolves to
    for name, before in _ADDED_FIELDS.items():
        if determining[name] == before:
            del determining[name]
    determining.update(environment(config, device), profile=profile, data=data.identity)
    return hashlib.sha256(json.dumps(determining, sort_keys=True).encode()).hexdigest()[:16]


def result_paths(config: Config, key: str, profile: str) -> tuple[Path, Path]:
    """The JSON record and the tensor file of a result."""
    stem = results_dir() / profile / f"{config.norm}-{key}"
    return stem.with_suffix(".json"), stem.with_suffix(".pt")
