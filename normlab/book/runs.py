"""One experiment: a :class:`normlab.Config` -> :func:`run` -> :class:`Result`, cached.

A run's result is found again by its cache key (:mod:`normlab.book.cache`); where it ran
(processor, threads, GPU, library versions) is recorded in ``Result.info``.

Settings of the environment, each read when it is needed:

- ``$NORMLAB_PROFILE``: ``full`` (default) is the real experiment; ``smoke`` trains one
  epoch on a small subset, for CI (:mod:`normlab.book.studies` sizes the presets);
- ``$NORMLAB_TRAIN=never`` makes :func:`run` raise instead of training a result that is
  not cached (for a build that must only show committed results).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..data import CIFAR10, load_data
from ..model import Net, count_parameters
from ..store import atomic_save, atomic_write_json
from ..train import (Config, Diverged, History, Pipeline, choose_device, emulated, evaluate, fit,
                     native_precision, predict)
from .. import __version__
from .cache import RESULTS_ENV, cache_key, environment, result_paths, trained_on

PROFILE_ENV = "NORMLAB_PROFILE"
TRAIN_ENV = "NORMLAB_TRAIN"
TRAIN_MODES = ("auto", "never")
#: The sizes the book comes in: ``full``, the real experiment, and ``smoke``, for CI.
PROFILES = ("full", "smoke")


#: Every ``NORMLAB_*`` setting of the environment that normlab or its tests read.
SETTINGS = ("NORMLAB_DATA", "NORMLAB_CACHE", RESULTS_ENV, PROFILE_ENV, TRAIN_ENV,
            "NORMLAB_REQUIRE_BROWSER")


def _setting(variable: str, valid: tuple[str, ...]) -> str:
    """The environment's ``variable``, or the first of ``valid`` where it is not set.
    Raises ValueError, naming the variable and the valid values, for any other value.
    Warns about any ``NORMLAB_*`` variable that is none of :data:`SETTINGS` (a misspelt one
    would otherwise be ignored in silence), once per place that reads a setting."""
    unknown = sorted(name for name in os.environ
                     if name.startswith("NORMLAB_") and name not in SETTINGS)
    if unknown:
        warnings.warn(f"Unknown setting {', '.join(unknown)}, ignored: normlab reads "
                      f"{', '.join(SETTINGS)}.", stacklevel=3)
    value = os.environ.get(variable, valid[0])
    if value not in valid:
        raise ValueError(f"Unknown value {value!r} for {variable}. "
                         f"Valid values are {', '.join(valid)}.")
    return value


def train_mode() -> str:
    """``$NORMLAB_TRAIN``: ``auto`` (the default) or ``never``."""
    return _setting(TRAIN_ENV, TRAIN_MODES)


def current_profile() -> str:
    """``$NORMLAB_PROFILE``: ``full`` (the default) or ``smoke``."""
    return _setting(PROFILE_ENV, PROFILES)


def resolve_profile(profile: str | None) -> str:
    """``profile``, or the current one where it is None. Raises ValueError for an unknown
    profile."""
    if profile is None:
        return current_profile()
    if profile not in PROFILES:
        raise ValueError(f"Unknown value {profile!r} for argument profile. "
                         f"Valid values are {', '.join(PROFILES)}.")
    return profile


@dataclass
class Result:
    """What a run produced.

    Attributes:
        config: the recipe.
        history: per-epoch metrics.
        train_accuracy: final accuracy on the (unaugmented) training split, fraction.
        test_accuracy: final accuracy on the test split, fraction.
        seconds: wall time of the training run (all epochs), seconds.
        parameters: trainable parameters of the model.
        state_dict: trained weights (on the CPU).
        test_probs: float (N_test, 10) class probabilities on the test split.
        test_labels: int64 (N_test,) true labels.
        info: key, profile, data identity, device, precision, hardware and versions, and
            ``diverged``: None, or where the loss became NaN or infinite (``epoch``,
            ``step``, ``lr``); a diverged run keeps the epochs it completed, and its
            accuracies are those of its final (broken) weights.
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

    @property
    def diverged(self) -> bool:
        """Whether the run stopped because its loss became NaN or infinite."""
        return self.info.get("diverged") is not None

    def model(self) -> Net:
        """The trained network, in evaluation mode, on the CPU.

        Raises:
            RuntimeError: ``$NORMLAB_TRAIN`` is ``never``: a build from committed results
                evaluates no model, and reads what it shows of one from stored facts
                (:mod:`normlab.book.facts`).
        """
        if train_mode() == "never":
            raise RuntimeError(
                f"The trained {self.config.norm} model {self.info['key']} is evaluated, and "
                f"{TRAIN_ENV}=never forbids evaluating models: what a chapter shows of a "
                f"model is a stored fact (normlab.book.facts). Compute the facts "
                f"(`python -m normlab reproduce`, or unset {TRAIN_ENV}) and commit results/.")
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


def prepare_data(config: Config, root: str | os.PathLike | None = None,
                 download: bool = True) -> CIFAR10:
    """The data ``config`` trains on: CIFAR-10 from ``root`` (default ``$NORMLAB_DATA``,
    :func:`normlab.load_data`; downloaded when missing, as in Colab, unless ``download``
    is false), cut to the config's subsets."""
    return load_data(root, download).subset(config.train_subset, config.test_subset)


def data_for(configs: list[Config], root: str | os.PathLike | None = None,
             download: bool = True) -> dict[tuple, CIFAR10]:
    """The data of each (train_subset, test_subset) that ``configs`` use, by subset: CIFAR-10
    loaded once (:func:`normlab.load_data`, from ``root``), then cut to each subset."""
    subsets = dict.fromkeys((c.train_subset, c.test_subset) for c in configs)
    if not subsets:
        return {}
    whole = load_data(root, download)
    return {subset: whole.subset(*subset) for subset in subsets}


def run_each(configs: Sequence[Config], *, profile: str | None = None, device: str = "auto",
             progress: bool = True, retrain: bool = False,
             root: str | os.PathLike | None = None, download: bool = True,
             data: dict | None = None) -> list[Result]:
    """:func:`run` of each of ``configs``, in their order, with the data of each subset they
    use loaded once (:func:`data_for`, from ``root``) or taken from ``data``: what a list of
    ``run(config)`` calls gives, without loading CIFAR-10 again for each.

    Raises:
        KeyError: ``data`` lacks a subset that ``configs`` use.
        FileNotFoundError: a result is missing and ``$NORMLAB_TRAIN`` is ``never``
            (:func:`run`).
    """
    data = data or data_for(configs, root, download)
    return [run(c, data[(c.train_subset, c.test_subset)], profile=profile, device=device,
                progress=progress, retrain=retrain) for c in configs]


def load_result(config: Config, data: CIFAR10, profile: str | None = None,
                device: str = "auto") -> Result | None:
    """The cached result of ``config`` on ``data`` in ``profile`` (default: the current
    profile), or None.

    Raises:
        ValueError: the result's files do not load, or disagree with ``data`` or with each
            other (:func:`_check_record`); the message names the file and the way out.
    """
    profile = resolve_profile(profile)
    record_path, tensor_path = result_paths(config, cache_key(config, data, profile, device),
                                            profile)
    if not (record_path.exists() and tensor_path.exists()):
        return None
    path = record_path
    try:
        record = json.loads(record_path.read_text())
        path = tensor_path
        raw = tensor_path.read_bytes()   # read once: loaded, and checked against its record
        tensors = torch.load(io.BytesIO(raw), weights_only=True)
        path = record_path
        result = Result(config, History(**record["history"]), record["train_accuracy"],
                        record["test_accuracy"], record["seconds"], record["parameters"],
                        tensors["state_dict"], tensors["test_probs"].float(),
                        tensors["test_labels"], record["info"])
    except Exception as error:   # torch and json raise many kinds for a damaged file
        raise ValueError(
            f"The result {path} does not load ({type(error).__name__}): train it again with "
            f"--retrain (run(..., retrain=True)), or delete {record_path.name} and "
            f"{tensor_path.name}.") from error
    _check_record(result, data, record_path, tensor_path, hashlib.sha256(raw).hexdigest())
    result.info["profile"] = profile      # where it was found: its facts are stored there
    return result


def _check_record(result: Result, data: CIFAR10, record_path: Path, tensor_path: Path,
                  tensors_sha256: str) -> None:
    """Raise ValueError where a result disagrees with what can be checked cheaply: the data
    it was trained on (its identity and test labels) against ``data``, its test accuracy
    against its stored test probabilities, and its tensor file against the checksum its
    record keeps (records written since the checksum was added), given as ``tensors_sha256``."""
    way_out = (f"delete {record_path.name} and {tensor_path.name}, or train it again with "
               f"--retrain (run(..., retrain=True)).")
    if (result.info.get("data") != data.identity
            or not torch.equal(result.test_labels, data.test_labels)):
        raise ValueError(f"The result {record_path} was trained on the data "
                         f"{result.info.get('data')}, not on {data.identity}, which its name "
                         f"says (copied or edited?): {way_out}")
    n = len(result.test_labels)
    right = (result.test_probs.argmax(dim=1) == result.test_labels).sum().item()
    if abs(right - result.test_accuracy * n) > 2:   # probabilities kept in fp16 may tie
        raise ValueError(f"The result {record_path} gives a test accuracy of "
                         f"{result.test_accuracy:.2%}, and its stored test predictions "
                         f"{right / n:.2%} (edited?): {way_out}")
    checksum = result.info.get("tensors_sha256")
    if checksum is not None and checksum != tensors_sha256:
        raise ValueError(f"The tensor file {tensor_path} is not the one its record "
                         f"{record_path.name} was written with (its SHA-256 differs): {way_out}")


def run(config: Config, data: CIFAR10 | None = None, *, profile: str | None = None,
        device: str = "auto", progress: bool = True, retrain: bool = False,
        exact_precision: bool = False) -> Result:
    """Train ``config`` on ``device`` (or load its cached result) and return the
    :class:`Result`.

    A result of ``config`` is found whatever the machine. One that has to be trained on a
    device that emulates the config's precision (bf16 on a CPU without AVX512-BF16:
    :func:`normlab.emulated`) is trained, and found again, in the precision the device
    computes natively (:func:`normlab.native_precision`), saying so in one line, unless
    ``exact_precision`` (what ``reproduce`` and an explicit ``--precision`` ask for); the
    result's config and ``info`` record the precision it was trained in.

    ``data`` defaults to :func:`prepare_data` of the config; ``profile`` (default: the
    current profile) names the results folder. The result is written atomically, weights
    and JSON record each, after the run has finished: an interrupted run leaves nothing.
    A run whose loss became NaN or infinite is a result too, not an error: its
    ``diverged`` is true, ``info["diverged"]`` gives the epoch, step and learning rate
    (:class:`normlab.Diverged`), its history holds the epochs completed before, and its
    accuracies are those of the weights it stopped with.

    Raises:
        FileNotFoundError: no cached result, and ``$NORMLAB_TRAIN`` is ``never``.
        ValueError: ``$NORMLAB_TRAIN`` is neither ``auto`` nor ``never``, or it is ``never``
            and ``retrain`` asks to train a result that is there.
    """
    profile, mode = resolve_profile(profile), train_mode()
    data = data if data is not None else prepare_data(config)
    if not retrain and (cached := load_result(config, data, profile, device)) is not None:
        return cached
    target = choose_device(device)
    native = (replace(config, precision=native_precision(target))
              if not exact_precision and emulated(config.precision, target) else None)
    if native and not retrain and (cached := load_result(native, data, profile, device)):
        return cached
    key = cache_key(config, data, profile, device)
    record_path, tensor_path = result_paths(config, key, profile)
    if mode == "never":
        stand_in = ([result_paths(native, cache_key(native, data, profile, device), profile)[0]]
                    if native is not None else [])
        there = [path for path in (record_path, *stand_in) if path.exists()]
        if retrain and there:
            raise ValueError(f"retrain=True (--retrain) asks to train {there[0].name} again, "
                             f"and {TRAIN_ENV}=never forbids training: drop one of the two.")
        _refuse_training(config, data, profile, record_path, native)
    if native is not None:
        where = "CPU" if target.type == "cpu" else "GPU"
        print(f"{config.precision} is emulated on this {where}: training in {native.precision}",
              flush=True)
        return run(native, data, profile=profile, device=device, progress=progress,
                   retrain=True, exact_precision=True)
    check_writable(record_path.parent)
    pipeline = Pipeline.for_config(config, data, device)
    model = config.build_model()
    start = time.perf_counter()
    try:
        history, diverged = fit(model, data, config, pipeline, progress=progress), None
    except Diverged as error:   # a result too: where a recipe stops training
        history = error.history
        diverged = {"epoch": error.epoch, "step": error.step, "lr": error.lr}
    seconds = time.perf_counter() - start
    _, train_accuracy = evaluate(model, data.train_images, data.train_labels, pipeline)
    probs = predict(model, data.test_images, pipeline)
    test_accuracy = (probs.argmax(dim=1) == data.test_labels).float().mean().item()
    info = {"key": key, "profile": profile, **environment(config, pipeline.device),
            "data": data.identity,
            "diverged": diverged,
            "normlab": __version__,
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": processor_name(),
            "threads": torch.get_num_threads(),
            "gpu": (torch.cuda.get_device_name(pipeline.device)
                    if pipeline.device.type == "cuda" else None)}
    result = Result(config, history, train_accuracy, test_accuracy, seconds,
                    count_parameters(model),
                    {k: v.cpu() for k, v in model.state_dict().items()},
                    probs, data.test_labels.clone(), info)
    atomic_save({"state_dict": result.state_dict, "test_probs": probs.half(),
                 "test_labels": result.test_labels}, tensor_path)
    info["tensors_sha256"] = hashlib.sha256(tensor_path.read_bytes()).hexdigest()
    atomic_write_json({**result.record(), "profile": profile}, record_path)
    return result


def _refuse_training(config: Config, data: CIFAR10, profile: str, record_path: Path,
                     native: Config | None) -> None:
    """Raise FileNotFoundError for a result that ``$NORMLAB_TRAIN=never`` forbids training,
    naming the data that results of the recipe (or of its ``native`` stand-in) exist for."""
    elsewhere = sorted({*trained_on(config, profile), *(trained_on(native, profile) if native
                                                        else ())})
    train = (f"train it (`python -m normlab reproduce`, or unset {TRAIN_ENV}) and commit "
             f"results/.")
    raise FileNotFoundError(
        f"No result {record_path} for {config} on the data {data.identity}, and "
        f"{TRAIN_ENV}=never forbids training it. "
        + (f"Results of this recipe exist for the data {', '.join(elsewhere)}: point "
           f"NORMLAB_DATA at that data, or {train}" if elsewhere else train[0].upper() + train[1:]))


def check_writable(folder: Path) -> None:
    """Raise ValueError, before any training, if results cannot be written to ``folder``
    (a file in its place, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise ValueError(f"Cannot write results to {folder} ({error}): point "
                         f"NORMLAB_RESULTS at a folder you can write, or mend this one; "
                         f"nothing was trained.") from error


def processor_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, with its family and model numbers where ``cpuinfo`` gives
    them (``"AMD EPYC (family 25, model 17)"``): virtual machines often report one name
    for CPU generations whose speeds differ by a factor of two. Falls back to
    :func:`platform.processor` where there is no ``/proc/cpuinfo`` (macOS, Windows)."""
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


def machine_name(info: dict) -> str:
    """What a timing ran on, from a result's ``info`` or a benchmark record (keys
    ``processor``, ``threads``, ``device`` and, on a GPU, ``gpu``): the GPU by name
    (``"NVIDIA H100 (host CPU: ...)"``), or the CPU and its threads
    (``"AMD EPYC (family 25, model 17), 2 threads, cpu"``)."""
    if info.get("gpu"):
        return f"{info['gpu']} (host CPU: {info['processor']})"
    threads = info["threads"]
    return f"{info['processor']}, {threads} thread{'s' * (threads != 1)}, {info['device']}"


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
