"""Where results live and how a run's result is found again: the cache key.

A result is stored as ``<norm>-<key>.json`` (config, per-epoch history, final accuracies,
seconds, where it ran) and ``<norm>-<key>.pt`` (weights and test predictions) under
``results_dir()/<profile>/``. The key is a hash of what determines the numbers: the recipe
(:class:`normlab.Config`, whose precision is named: ``bf16``, ``fp16`` or ``fp32``), the profile, the
data's content (:attr:`normlab.CIFAR10.identity`) and the code's revision (the package
version, bumped whenever a change alters the numbers). Where a
run happened (CPU, GPU, threads, library versions) is recorded in its ``info``, not keyed:
a result trained on one machine is found on any other. Only ``precision="auto"``, which
each machine resolves its own way, is keyed by what it resolves to here.
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
from ..store import cache_dir, folder
from ..train import Config, choose_device, choose_precision, native_precision

RESULTS_ENV = "NORMLAB_RESULTS"


def results_dir() -> Path:
    """Folder for training results (created on demand): ``$NORMLAB_RESULTS``, else the
    ``results/`` folder of a source checkout (committed), else ``results/`` in
    :func:`normlab.store.cache_dir`.

    Raises:
        NotADirectoryError: a file (``/dev/null``, say) is in its place, naming the setting.
    """
    checkout = Path(__file__).resolve().parents[2]
    default = (checkout / "results" if (checkout / "pyproject.toml").exists()
               else cache_dir() / "results")
    return folder(Path(os.environ.get(RESULTS_ENV) or default).expanduser(), RESULTS_ENV)


def benchmark_records(benchmark: str = "throughput") -> list[dict]:
    """The records of ``benchmarks/<benchmark>.py --output`` committed in
    ``results/benchmarks/`` as ``<name>-<date>.json`` (``throughput``, or ``compile`` for
    ``compile_run.py``), oldest first."""
    return [json.loads(path.read_text())
            for path in sorted((results_dir() / "benchmarks").glob(f"{benchmark}-*.json"))]


def environment(config: Config, device: str | torch.device = "auto") -> dict:
    """Where and how ``config`` runs on ``device`` (:func:`normlab.choose_device`): the
    device type and the precision it resolves to there (recorded in a result's ``info``)."""
    device = choose_device(str(device))
    dtype = choose_precision(config.precision, device)
    return {"device": device.type, "precision": str(dtype).removeprefix("torch.")}


def cache_key(config: Config, data: CIFAR10, profile: str,
              device: str | torch.device = "auto") -> str:
    """Hex digest (16 characters) of what determines the result of ``config`` on ``data``
    in ``profile``: the same on every machine, but for ``precision="auto"`` (resolved on
    ``device``)."""
    determining = asdict(config)
    if config.precision == "auto":
        determining["precision"] = native_precision(choose_device(str(device)))
    determining.update(profile=profile, data=data.identity, normlab=__version__)
    return hashlib.sha256(json.dumps(determining, sort_keys=True).encode()).hexdigest()[:16]


def result_paths(config: Config, key: str, profile: str) -> tuple[Path, Path]:
    """The JSON record and the tensor file of a result."""
    stem = results_dir() / profile / f"{config.norm}-{key}"
    return stem.with_suffix(".json"), stem.with_suffix(".pt")


def trained_on(config: Config, profile: str) -> list[str]:
    """The data identities that results of ``config`` (the same recipe) in ``profile`` were
    trained on, from their records: what a result that is not found exists for instead."""
    recipe = json.loads(json.dumps(asdict(config)))   # as a record holds it (lists, not tuples)
    found = set()
    for path in (results_dir() / profile).glob(f"{config.norm}-*.json"):
        record = json.loads(path.read_text())
        if record.get("config") == recipe:
            found.add(record["info"]["data"])
    return sorted(found)
