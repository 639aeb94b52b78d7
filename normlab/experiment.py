"""One experiment = one :class:`Config` -> :func:`run` -> :class:`Result`, cached on disk.

The cache key is a hash of everything that determines the result: the config (less the
fields that only say where things are), the data's identity (a fingerprint of its files),
the package version (bumped whenever a change alters the numbers), the revision of the
norm layer (``normlab.norms.NORM_REVISIONS``), the device type and the precision. A result
is stored as ``<norm>-<key>.json`` (config, per-epoch history, final accuracies, seconds,
hardware, versions) and ``<norm>-<key>.pt`` (weights and test predictions) under
``results_dir()/<profile>/``, both written atomically.

Profiles (``$NORMLAB_PROFILE``): ``full`` (default) is the real experiment; ``smoke``
trains one epoch on a 2,000-image subset, for CI. Same code, other sizes.

Two more settings of the environment: ``$NORMLAB_PRECISION`` (``auto``, ``fp32`` or
``bf16``) is the precision of :func:`book_config` (default ``auto``: bf16 where the
hardware computes it natively), so that a machine without native bf16 can still find
results trained under bf16; ``$NORMLAB_TRAIN=never`` makes :func:`run` raise instead of
training a result that is not cached (for a build that must only show committed results).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from . import __version__
from .data import CIFAR10, check_padding_mode, load_data
from .model import WIDTHS, Net, count_parameters
from .norms import DEFAULT_GROUPS, NORM_REVISIONS, canonical_norm
from .store import atomic_save, atomic_write_json, results_dir
from .train import History, Pipeline, choose_device, choose_precision, evaluate, fit, predict

PROFILE_ENV = "NORMLAB_PROFILE"
PRECISION_ENV = "NORMLAB_PRECISION"
TRAIN_ENV = "NORMLAB_TRAIN"
TRAIN_MODES = ("auto", "never")
PROFILES = {
    "full": {},
    "smoke": {"epochs": 1, "train_subset": 2000, "test_subset": 1000},
}
#: Fields that say where or how verbosely to run, not what the result is.
_NOT_IN_KEY = ("data", "download", "device", "precision")
#: Fields added to :class:`Config` after results were first cached, each with the value
#: that computes what every run did before the field existed. At that value a field adds
#: nothing to the cache key, so the results cached before it are still found (as a norm
#: layer at revision 1 adds nothing, ``normlab.norms.NORM_REVISIONS``).
_ADDED_FIELDS = {"crop_padding_mode": "constant"}


@dataclass(frozen=True)
class Config:
    """Everything that determines a training run. Units in the comments."""

    norm: str = "batch"                 # batch | layer | group | instance | none
    groups: int = DEFAULT_GROUPS        # groups of norm="group"
    widths: tuple[int, ...] = WIDTHS    # channels (C1, C2, c3, C4-C6, c7, C8-C10)
    residual: bool = True               # residual additions in stages 2 and 3
    order: str = "conv-relu-norm"       # or "conv-norm-relu"
    epochs: int = 20                    # passes over the training split
    batch_size: int = 128               # images per optimizer step
    lr: float = 0.1                     # peak learning rate of OneCycle
    momentum: float = 0.9               # SGD's; OneCycle replaces it (make_optimizer)
    weight_decay: float = 5e-4          # L2 on convolution weights
    label_smoothing: float = 0.1        # of the training loss (0 = none)
    pct_start: float = 0.25             # fraction of steps that warm the learning rate up
    crop_padding: int = 2               # pixels of padding of random crops (0: no crops)
    crop_padding_mode: str = "reflect"  # what fills the padding: constant (zeros) | reflect | replicate
    flip: bool = True                   # random horizontal flips
    seed: int = 0                       # weights, data order, augmentation
    train_subset: int | None = None     # images of the training split used (None = all)
    test_subset: int | None = None      # images of the test split used (None = all)
    profile: str = "full"               # the profile the run belongs to (see PROFILES)
    data: str | None = None             # data folder (None: $NORMLAB_DATA); not in the key
    download: bool = False              # download the canonical archive if it is missing
    device: str = "auto"                # auto | cpu | cuda | mps ...; its type is in the key
    precision: str = "auto"             # auto | fp32 | bf16; the resolved dtype is in the key

    def __post_init__(self):
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        object.__setattr__(self, "widths", tuple(self.widths))
        check_padding_mode(self.crop_padding_mode, "crop_padding_mode")
        if self.profile not in PROFILES:
            raise ValueError(f"Unknown value {self.profile!r} for argument profile. "
                             f"Valid values are {', '.join(PROFILES)}.")

    def build_model(self) -> Net:
        """The network this config trains (weights initialized from ``seed``)."""
        torch.manual_seed(self.seed)
        return Net(self.norm, groups=self.groups, widths=self.widths,
                   residual=self.residual, order=self.order)


def current_profile() -> str:
    """``$NORMLAB_PROFILE`` or ``full``. Raises ValueError for an unknown profile."""
    profile = os.environ.get(PROFILE_ENV, "full")
    if profile not in PROFILES:
        raise ValueError(f"Unknown value {profile!r} for {PROFILE_ENV}. "
                         f"Valid values are {', '.join(PROFILES)}.")
    return profile


def book_config(norm: str = "batch", profile: str | None = None, **overrides) -> Config:
    """The config the book uses for ``norm``, sized by ``profile`` (default: the current
    profile), in the precision ``$NORMLAB_PRECISION`` names (default ``auto``); the
    canonical archive is downloaded when no data is found (as in Colab); ``overrides``
    change any other field."""
    profile = profile or current_profile()
    precision = os.environ.get(PRECISION_ENV, "auto")
    return Config(norm=norm, profile=profile, **{"download": True, "precision": precision,
                                                 **PROFILES[profile], **overrides})


@dataclass
class Result:
    """What a run produced.

    Attributes:
        config: the config.
        history: per-epoch metrics.
        train_accuracy: final accuracy on the (unaugmented) training split, fraction.
        test_accuracy: final accuracy on the test split, fraction.
        seconds: wall time of the training run (all epochs), seconds.
        parameters: trainable parameters of the model.
        state_dict: trained weights (on the CPU).
        test_probs: float (N_test, 10) class probabilities on the test split.
        test_labels: int64 (N_test,) true labels.
        info: key, hardware, device, precision and library versions.
    """

    config: Config
    history: History
    train_accuracy: float
    test_accuracy: float
    seconds: float
    parameters: int
    state_dict: dict[str, torch.Tensor]
    test_probs: torch.Tensor
    test_labels: torch.Tensor
    info: dict

    def model(self) -> Net:
        """The trained network, in evaluation mode, on the CPU."""
        model = self.config.build_model()
        model.load_state_dict(self.state_dict)
        return model.eval()

    def record(self) -> dict:
        """The JSON record: ``norm``, ``seed``, ``epochs``, accuracies (fractions),
        ``seconds``, ``parameters``, per-epoch ``history``, ``config`` and ``info``."""
        c = self.config
        return {"norm": c.norm, "seed": c.seed, "epochs": c.epochs,
                "train_accuracy": self.train_accuracy, "test_accuracy": self.test_accuracy,
                "seconds": self.seconds, "parameters": self.parameters,
                "history": self.history.to_dict(), "config": asdict(c), "info": self.info}


def _environment(device: torch.device, dtype: torch.dtype, norm: str) -> dict:
    """What besides the config determines a result's numbers: the device type, the
    precision, the package version and, where the scheme has one, its layer's revision."""
    revision = {"norm_revision": NORM_REVISIONS[norm]} if norm in NORM_REVISIONS else {}
    return {"device": device.type, "precision": str(dtype).removeprefix("torch."),
            "normlab": __version__, **revision}


def cache_key(config: Config, data: CIFAR10) -> str:
    """Hex digest of everything that determines the result of ``config`` on ``data``."""
    device = choose_device(config.device)
    determining = {f.name: getattr(config, f.name) for f in fields(config)
                   if f.name not in _NOT_IN_KEY}
    for name, before in _ADDED_FIELDS.items():
        if determining[name] == before:
            del determining[name]
    determining.update(
        _environment(device, choose_precision(config.precision, device), config.norm),
        data=data.identity)
    return hashlib.sha256(json.dumps(determining, sort_keys=True).encode()).hexdigest()[:16]


def result_paths(config: Config, key: str) -> tuple[Path, Path]:
    """The JSON record and the tensor file of a result."""
    stem = results_dir() / config.profile / f"{config.norm}-{key}"
    return stem.with_suffix(".json"), stem.with_suffix(".pt")


def prepare_data(config: Config) -> CIFAR10:
    """The data ``config`` trains on: its source, cut to its subsets."""
    return load_data(config.data, config.download).subset(config.train_subset, config.test_subset)


def load_result(config: Config, data: CIFAR10) -> Result | None:
    """The cached result of ``config`` on ``data``, or None."""
    key = cache_key(config, data)
    record_path, tensor_path = result_paths(config, key)
    if not (record_path.exists() and tensor_path.exists()):
        return None
    record = json.loads(record_path.read_text())
    tensors = torch.load(tensor_path, weights_only=True)
    return Result(config, History(**record["history"]), record["train_accuracy"],
                  record["test_accuracy"], record["seconds"], record["parameters"],
                  tensors["state_dict"], tensors["test_probs"].float(),
                  tensors["test_labels"], record["info"])


def run(config: Config, data: CIFAR10 | None = None, progress: bool = True,
        retrain: bool = False) -> Result:
    """Train ``config`` (or load its cached result) and return the :class:`Result`.

    ``data`` defaults to :func:`prepare_data` of the config. The result is written to the
    cache atomically, weights and JSON record each, after the run has finished: an
    interrupted run leaves nothing behind.

    Raises:
        FileNotFoundError: no cached result, and ``$NORMLAB_TRAIN`` is ``never``.
        ValueError: ``$NORMLAB_TRAIN`` is neither ``auto`` nor ``never``.
    """
    data = data if data is not None else prepare_data(config)
    if not retrain and (cached := load_result(config, data)) is not None:
        return cached
    _check_training_allowed(config, data)
    pipeline = Pipeline.for_config(config, data)
    device, dtype = pipeline.device, pipeline.dtype
    model = config.build_model()
    start = time.perf_counter()
    history = fit(model, data, config, pipeline, progress=progress)
    seconds = time.perf_counter() - start
    _, train_accuracy = evaluate(model, data.train_images, data.train_labels, pipeline)
    probs = predict(model, data.test_images, pipeline)
    key = cache_key(config, data)
    info = {"key": key, **_environment(device, dtype, config.norm), "data": data.identity,
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": processor_name(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}
    result = Result(config, history, train_accuracy, history.test_accuracy[-1], seconds,
                    count_parameters(model),
                    {k: v.cpu() for k, v in model.state_dict().items()},
                    probs, data.test_labels.clone(), info)
    record_path, tensor_path = result_paths(config, key)
    atomic_save({"state_dict": result.state_dict, "test_probs": probs.half(),
                 "test_labels": result.test_labels}, tensor_path)
    atomic_write_json(result.record(), record_path)
    return result


def _check_training_allowed(config: Config, data: CIFAR10) -> None:
    mode = os.environ.get(TRAIN_ENV, "auto")
    if mode not in TRAIN_MODES:
        raise ValueError(f"Unknown value {mode!r} for {TRAIN_ENV}. "
                         f"Valid values are {', '.join(TRAIN_MODES)}.")
    if mode == "never":
        record_path, _ = result_paths(config, cache_key(config, data))
        raise FileNotFoundError(
            f"No result {record_path} for {config} on the data {data.identity}, and "
            f"{TRAIN_ENV}=never forbids training it. Train it (`python -m normlab reproduce`, "
            f"or unset {TRAIN_ENV}) on the data and in the precision the committed results "
            f"were trained with, and commit results/.")


def flip_accuracy(result: Result, data: CIFAR10 | None = None) -> float:
    """Test accuracy (fraction) of ``result``'s trained model when each test image's class
    probabilities are averaged with those of its mirror image (test-time augmentation:
    :func:`normlab.train.predict` with ``flip=True``), on the config's device and precision.
    ``data`` defaults to the config's data; it must be the data the model was trained on
    (its training split gives the input normalization)."""
    data = data if data is not None else prepare_data(result.config)
    pipeline = Pipeline.for_config(result.config, data)
    model = result.model().to(pipeline.device, memory_format=torch.channels_last)
    return evaluate(model, data.test_images, data.test_labels, pipeline, flip=True)[1]


def processor_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, with its family and model numbers where ``cpuinfo`` gives
    them (``"AMD EPYC (family 25, model 17)"``): virtual machines often report a name
    shared by CPU generations whose speeds differ by a factor of two, and a timing is only
    comparable on the same one. Falls back to :func:`platform.processor` where there is no
    ``/proc/cpuinfo`` (macOS, Windows)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return platform.processor()
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())   # the first processor's
    name = fields.get("model name", platform.processor())
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


@dataclass
class Mistake:
    """A misclassified test image: ``index`` into the test split, ``image`` uint8
    (3, 32, 32), true and predicted class names, and the predicted class's probability
    (``confidence``, fraction)."""

    index: int
    image: torch.Tensor
    true: str
    predicted: str
    confidence: float


def misclassified(result: Result, k: int = 10, data: CIFAR10 | None = None) -> list[Mistake]:
    """The ``k`` test images the model gets wrong with the highest confidence.

    Rule: among the test images whose most probable class is not the true one, take the
    ``k`` with the highest probability of the predicted class (the most confident
    mistakes), ties broken by index. ``data`` defaults to the config's data.
    """
    data = data if data is not None else prepare_data(result.config)
    confidence, predicted = result.test_probs.max(dim=1)
    wrong = torch.nonzero(predicted != result.test_labels).flatten()
    order = sorted(wrong.tolist(), key=lambda i: (-confidence[i].item(), i))[:k]
    return [Mistake(i, data.test_images[i], data.classes[result.test_labels[i]],
                    data.classes[predicted[i]], confidence[i].item()) for i in order]
