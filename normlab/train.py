"""The recipe and the training loop: :class:`Config`, :func:`fit`, :func:`evaluate`,
:func:`predict`.

The device and the precision are chosen once (:func:`choose_device`,
:func:`choose_precision`: the recipe's, bf16 by default, or with ``auto`` what the
hardware computes natively, :func:`native_precision`) and used for the whole run. Data
stays uint8 on the device; each batch is augmented (:func:`normlab.data.augment`),
converted and normalized there. The model runs in channels_last memory format under
autocast (the normalization kernels still accumulate their statistics in fp32; fp16 losses
are scaled), with SGD + Nesterov momentum and the OneCycle learning-rate schedule (Smith &
Topin 2019). On Linux the C library's allocator is told to keep the memory of freed
tensors for the next step (:func:`keep_freed_memory`).
"""

from __future__ import annotations

import ctypes
import functools
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import CIFAR10, augment, batches, channel_stats, check_padding_mode, normalize
from .model import MAX_PARAMS, WIDTHS, Net, count_parameters
from .norms import DEFAULT_GROUPS, canonical_norm

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Config:
    """The recipe: everything that determines a training run's numbers, and nothing about
    where it runs (the device is the pipeline's). Units in the comments.

    Raises:
        TypeError: a value of another type than its field's (``norm=None``,
            ``residual="False"``, ``batch_size=True``, ``seed=1.5``, ``lr="0.1"``), naming
            the field and the type it takes.
        ValueError: an unknown norm, padding mode, order or precision; a number outside its
            range (the message gives the range); widths of the wrong length, groups that do
            not divide them, or a network over the parameter budget.
    """

    norm: str = "batch"                 # batch|layer|group|instance|none|frn|rms-group|batch-renorm
    groups: int = DEFAULT_GROUPS        # groups of norm="group" and "rms-group"
    widths: tuple[int, ...] = WIDTHS    # channels (C1, C2, c3, C4-C6, c7, C8-C10)
    residual: bool = True               # residual additions in stages 2 and 3
    order: str = "conv-relu-norm"       # conv-relu-norm (the assignment's) | conv-norm-relu
    weight_standardization: bool = False  # standardized 3x3 conv weights (Qiao et al. 2019)
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
    precision: str = "bf16"             # bf16 | fp16 | fp32 | auto (what the hardware computes natively)

    def __post_init__(self):
        if isinstance(self.widths, list):   # as a JSON record holds them
            object.__setattr__(self, "widths", tuple(self.widths))
        _check_types(self)
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        check_padding_mode(self.crop_padding_mode, "crop_padding_mode")
        if self.precision != "auto" and self.precision not in PRECISIONS:
            raise ValueError(f"Unknown value {self.precision!r} for argument precision. "
                             f"Valid values are auto, {', '.join(PRECISIONS)}.")
        _check_recipe(self)

    def build_model(self) -> Net:
        """The network this config trains, its weights initialized from ``seed`` (the
        global random generator is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return Net(self.norm, groups=self.groups, widths=self.widths,
                       residual=self.residual, order=self.order,
                       weight_standardization=self.weight_standardization)


#: What each field's annotation admits: an int is not a bool (``batch_size=True``), a
#: number is not a string (``lr="0.1"``), a bool is not a string (``residual="False"``).
_ADMITS = {"int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
           "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
           "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str)}
_SAYS = {"int": "a whole number", "float": "a number", "bool": "True or False",
         "str": "a string"}


def _check_types(config: Config) -> None:
    """Raise TypeError, naming the field and the type it takes, for a value of another type
    (``Config``'s annotations: int, float, bool, str, tuple[int, ...], int | None)."""
    for f in fields(config):
        value, kind = getattr(config, f.name), f.type.removesuffix(" | None")
        if value is None and f.type.endswith("| None"):
            continue
        if kind == "tuple[int, ...]":
            ok, says = (isinstance(value, tuple) and all(map(_ADMITS["int"], value)),
                        "a tuple of whole numbers")
        else:
            ok, says = _ADMITS[kind](value), _SAYS[kind]
        if not ok:
            none = " or None" if f.type.endswith("| None") else ""
            raise TypeError(f"Config.{f.name} must be {says}{none}, got {value!r} "
                            f"({type(value).__name__}).")


def _check_recipe(config: Config) -> None:
    """Raise ValueError, saying what is valid, for a recipe that cannot train."""
    def fail(name, rule):
        raise ValueError(f"{name} must be {rule}, got {getattr(config, name)!r}.")

    for name in ("epochs", "batch_size", "groups"):
        if getattr(config, name) < 1:
            fail(name, "at least 1")
    for name, low, high in (("lr", 0, math.inf), ("weight_decay", 0, math.inf),
                            ("momentum", 0, 1), ("label_smoothing", 0, 1), ("pct_start", 0, 1)):
        value = getattr(config, name)
        positive = name in ("lr", "pct_start")
        if not (math.isfinite(value) and low <= value < high and (value > 0 or not positive)):
            fail(name, f"a finite number above {low}" + (f" and below {high}" if high < math.inf
                                                        else "") if positive
                 else f"from {low} to below {high}")
    if not 0 <= config.seed < 2 ** 64:
        fail("seed", "from 0 to 2**64 - 1 (torch's generators take 64 bits)")
    if not 0 <= config.crop_padding < 32:
        fail("crop_padding", "from 0 to 31 (pixels, less than the 32-pixel image)")
    if len(config.widths) != len(WIDTHS) or min(config.widths) < 1:
        raise ValueError(f"widths needs {len(WIDTHS)} channel counts (C1, C2, c3, C4-C6, c7, "
                         f"C8-C10), each at least 1, got {config.widths}.")
    for name in ("train_subset", "test_subset"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            fail(name, "None (all images) or at least 1")
    parameters = _parameters(config.norm, config.groups, config.widths, config.residual,
                             config.order)
    if parameters >= MAX_PARAMS:
        raise ValueError(f"Config(norm={config.norm!r}, widths={config.widths}) has "
                         f"{parameters:,} trainable parameters, over the budget of fewer than "
                         f"{MAX_PARAMS:,}: use smaller widths (normlab.Net(..., max_params=None) "
                         f"builds a larger network, which normlab.fit trains).")


@functools.lru_cache(maxsize=256)
def _parameters(norm: str, groups: int, widths: tuple[int, ...], residual: bool,
                order: str) -> int:
    """Trainable parameters of the network, counted without allocating or initializing
    weights (on the meta device: the random generator is not touched)."""
    with torch.device("meta"):
        return count_parameters(Net(norm, groups=groups, widths=widths, residual=residual,
                                    order=order, max_params=None))


def choose_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; any other value (``cpu``, ``cuda``,
    ``cuda:1``, ``mps``) must name a device that is there.

    Raises:
        ValueError: an unknown device, or one this machine does not have.
    """
    if device != "auto":
        try:
            chosen = torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"Unknown value {device!r} for argument device. Valid values are "
                             f"auto, cpu, cuda, cuda:N, mps.") from error
        if chosen.type not in ("cpu", "cuda", "mps"):   # meta, xpu, ...: parsed, not trained on
            raise ValueError(f"device={device!r} is not one normlab trains on. Valid values are "
                             f"auto, cpu, cuda, cuda:N, mps.")
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but no CUDA GPU is available here: use auto, "
                             f"cpu or a device this machine has.")
        if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}, but this machine has "
                             f"{torch.cuda.device_count()} CUDA GPU(s), cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1}.")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={device!r}, but Apple's MPS is not available here: use "
                             f"auto or cpu.")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def native_precision(device: torch.device) -> str:
    """The precision ``device`` computes natively, by name (``bf16``, ``fp16`` or ``fp32``):
    on a CUDA GPU bf16 from compute capability 8.0 (Ampere) on and fp16 before it (a T4 is
    7.5, where bf16 is emulated; :func:`fit` scales fp16 losses), on a CPU bf16 where oneDNN
    reports native support (AVX512-BF16, AMX; ``ONEDNN_MAX_CPU_ISA=AVX2`` turns it off), and
    fp32 elsewhere (Apple's MPS included)."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return "bf16" if major >= 8 else "fp16"
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16"
    return "fp32"


def emulated(precision: str, device: torch.device) -> bool:
    """Whether ``device`` emulates ``precision`` (a name of :data:`PRECISIONS`, or ``auto``)
    instead of computing it natively. fp32 and ``auto`` never are; bf16 is on a GPU before
    Ampere, on a CPU without AVX512-BF16 or AMX, and on Apple's MPS; fp16 is on a CPU
    without AVX512-FP16 or AMX-FP16. (An emulated bf16 autocast is several times slower than
    fp32: about 9x for a training step of the network on an AMD Zen 1 CPU.)"""
    if precision in ("auto", "fp32"):
        return False
    if device.type == "cuda":
        return precision == "bf16" and torch.cuda.get_device_capability(device)[0] < 8
    if device.type == "cpu":
        native = (torch.ops.mkldnn._is_mkldnn_bf16_supported() if precision == "bf16"
                  else torch.ops.mkldnn._is_mkldnn_fp16_supported())
        return not native
    return precision == "bf16"


def choose_precision(precision: str, device: torch.device) -> torch.dtype:
    """Compute dtype for ``precision`` (``auto``, ``fp32``, ``bf16`` or ``fp16``) on ``device``;
    ``auto`` is :func:`native_precision`.

    Raises:
        ValueError: an unknown precision name.
    """
    if precision == "auto":
        return PRECISIONS[native_precision(device)]
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown value {precision!r} for argument precision. "
                         f"Valid values are auto, {', '.join(PRECISIONS)}.")
    return PRECISIONS[precision]


#: ``mallopt`` parameters of glibc (``<malloc.h>``) and the values :func:`keep_freed_memory`
#: sets: blocks up to 1 GiB come from the heap, and up to 2 GiB of free memory at its top
#: stays in the process.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES, _TRIM_THRESHOLD_BYTES = 1 << 30, (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory in the process, for the next allocation.

    A CPU training step allocates the same megabyte-sized activation tensors every step;
    by default glibc returns such blocks to the kernel when they are freed (``mmap``
    above a threshold, trimming the heap's top), so every step pays a page fault per
    fresh 4 KiB page (about 5,000 at batch size 128, some 15 % of the step:
    ``benchmarks/throughput.py``). Raising ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``
    (``mallopt``, ``<malloc.h>``) keeps them in the heap: same numbers, bit for bit.

    Process-wide and lasting; :func:`fit` calls it. Returns whether glibc accepted both
    settings (False where the C library is not glibc: macOS, Windows, musl).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


class Diverged(FloatingPointError):
    """The training loss became NaN or infinite: the run diverged. ``epoch`` and ``step``
    (counted from 1) and the learning rate ``lr`` say where; ``history`` holds the epochs
    completed before it."""

    def __init__(self, message: str, epoch: int, step: int, lr: float, history: History):
        super().__init__(message)
        self.epoch, self.step, self.lr, self.history = epoch, step, lr, history

    def __reduce__(self):   # pickled whole, as worker processes send it back
        return type(self), (str(self), self.epoch, self.step, self.lr, self.history)


@dataclass
class History:
    """Per-epoch metrics of a training run; every list has one entry per epoch.

    Losses are mean cross-entropy per image (nats); accuracies are fractions in [0, 1];
    ``train_*`` are running values over the epoch's augmented batches, ``test_*`` are
    measured after the epoch; ``train_loss`` is the objective (with the recipe's label
    smoothing, whose floor is the entropy of the smoothed targets), ``train_cross_entropy``
    the plain cross-entropy of the same batches, comparable with ``test_loss``; ``lr`` is
    the learning rate at the epoch's last step; ``seconds`` is the wall time of the epoch,
    training and test evaluation.
    """

    train_loss: list[float] = field(default_factory=list)
    train_cross_entropy: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def append(self, **metrics: float) -> None:
        for name, value in metrics.items():
            getattr(self, name).append(float(value))

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)

    def rows(self) -> list[dict[str, float]]:
        """One dict per epoch (``epoch`` counted from 1), for tables."""
        columns = self.to_dict()
        return [{"epoch": i + 1, **{k: v[i] for k, v in columns.items()}}
                for i in range(len(self.seconds))]


class Pipeline:
    """The per-batch path from uint8 images to model inputs, on one device and dtype.

    Holds the training split's channel ``mean`` and ``std`` (3,), fractions of 255, the
    memory format of the inputs (channels_last unless told otherwise) and the training
    augmentation (:func:`normlab.data.augment`): random crops from the image padded by
    ``crop_padding`` pixels filled as ``crop_padding_mode`` says, and random horizontal
    flips with ``flip``. The defaults augment nothing; :meth:`for_config` takes the
    config's.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
                 dtype: torch.dtype, memory_format: torch.memory_format = torch.channels_last,
                 crop_padding: int = 0, crop_padding_mode: str = "constant",
                 flip: bool = False):
        self.mean, self.std, self.device, self.dtype = mean, std, device, dtype
        self.memory_format = memory_format
        self.crop_padding, self.crop_padding_mode, self.flip = crop_padding, crop_padding_mode, flip

    @classmethod
    def for_config(cls, config: Config, data: CIFAR10, device: str = "auto",
                   memory_format: torch.memory_format = torch.channels_last) -> Pipeline:
        """The pipeline ``config`` trains with on ``device`` (:func:`choose_device`): its
        precision and augmentation, and the channel statistics of ``data``'s training
        split."""
        device = choose_device(device)
        return cls(*channel_stats(data.train_images), device,
                   choose_precision(config.precision, device), memory_format,
                   config.crop_padding, config.crop_padding_mode, config.flip)

    def inputs(self, images: torch.Tensor, augment_with: torch.Generator | None = None):
        """uint8 (N, 3, H, W) -> normalized ``dtype`` (N, 3, H, W) in the pipeline's memory
        format, on the device; augmented with the pipeline's crops and flips, drawn from
        ``augment_with``, when a generator is given."""
        images = images.to(self.device, non_blocking=True)
        if augment_with is not None:
            images = augment(images, self.crop_padding, self.flip, augment_with,
                             self.crop_padding_mode)
        x = normalize(images, self.mean, self.std, self.dtype)
        return x.contiguous(memory_format=self.memory_format)

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` moved to the pipeline's device, in its memory format; returned."""
        return model.to(self.device, memory_format=self.memory_format)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype,
                              enabled=self.dtype != torch.float32)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, pipeline: Pipeline,
            batch_size: int = 1000, flip: bool = False) -> torch.Tensor:
    """Class probabilities (N, num_classes), float32 on the CPU, for uint8 images
    (N, 3, H, W), with the model placed by ``pipeline`` in evaluation mode (batch norm uses
    running statistics).

    With ``flip``, each image's probabilities are averaged with those of its mirror image
    (left-right): test-time augmentation with the training's flips (Krizhevsky et al.
    2012, Sec. 4.1, averaged the softmax over crops and their reflections), at twice the
    cost.
    """
    pipeline.place(model).eval()
    probs = []
    for images_batch, _ in batches(images, images, batch_size):
        x = pipeline.inputs(images_batch)
        with pipeline.autocast():
            p = model(x).float().softmax(dim=1)
            if flip:
                p = (p + model(x.flip(-1)).float().softmax(dim=1)) / 2
        probs.append(p.cpu())
    return torch.cat(probs)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             pipeline: Pipeline, batch_size: int = 1000, flip: bool = False
             ) -> tuple[float, float]:
    """Mean cross-entropy (nats per image) and accuracy (fraction) on uint8 images
    (N, 3, H, W) with int64 labels (N,), in evaluation mode; ``flip`` as in
    :func:`predict`."""
    probs = predict(model, images, pipeline, batch_size, flip)
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return loss, (probs.argmax(dim=1) == labels).float().mean().item()


def make_optimizer(model: nn.Module, config: Config, steps: int):
    """SGD with Nesterov momentum and the OneCycle schedule over ``steps`` steps.

    Weight decay applies to convolution weights only, not to normalization parameters or
    biases. (A normalization after a convolution cancels the scale of its weights, so
    decaying them changes their effective learning rate, not what the layer computes:
    van Laarhoven 2017.)

    OneCycle also cycles the momentum, inversely to the learning rate: from
    ``max_momentum`` (0.95) down to ``base_momentum`` (0.85) at the peak learning rate and
    back (PyTorch's defaults, Smith & Topin 2019). It sets the momentum of every parameter
    group when it is created, so ``config.momentum`` is replaced before the first step.

    Raises:
        ValueError: too few steps for the warm-up and the annealing phase of OneCycle.
    """
    if config.pct_start * steps <= 1:
        raise ValueError(f"OneCycle needs more than {1 / config.pct_start:g} steps with "
                         f"pct_start={config.pct_start}, got {steps}: train on more images "
                         f"or epochs, or use a smaller batch size.")
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, momentum=config.momentum, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps, pct_start=config.pct_start)
    return optimizer, schedule


def fit(model: nn.Module, data: CIFAR10, config: Config, pipeline: Pipeline | None = None,
        progress: bool = True, on_step: Callable | None = None) -> History:
    """Train any ``model`` mapping (N, 3, 32, 32) inputs to (N, classes) logits on ``data``
    for ``config.epochs`` epochs, evaluating on the test split after each epoch. Returns the
    :class:`History`. Calls :func:`keep_freed_memory`.

    ``pipeline`` (default: :meth:`Pipeline.for_config` of ``config`` and ``data``) gives the
    device, the precision and the augmentation, and places the model; ``config`` gives the
    rest of the recipe (its norm and widths describe :meth:`Config.build_model`, not
    ``model``). ``on_step(step, model, batch_loss, lr)``, if given, is called after each
    backward pass and before the optimizer step (``step`` counted from 1 over the whole
    run; ``batch_loss()`` recomputes the training loss of the current batch with the
    current weights, in fp32 whatever the precision of training; ``lr`` the step's
    learning rate): a probe, which must leave the model's weights and buffers as it found
    them.

    Raises:
        Diverged: a FloatingPointError: the loss became NaN or infinite; the message
            names the epoch, the step and that step's learning rate.
    """
    keep_freed_memory()
    pipeline = pipeline or Pipeline.for_config(config, data)
    device = pipeline.device
    pipeline.place(model)
    train_images, train_labels = data.train_images.to(device), data.train_labels.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = -(-len(train_labels) // config.batch_size)
    optimizer, schedule = make_optimizer(model, config, config.epochs * steps_per_epoch)
    # fp16's narrow range needs the loss scaled (Micikevicius et al. 2018); bf16 and fp32 not
    scaler = torch.amp.GradScaler(device.type, enabled=pipeline.dtype == torch.float16)
    history = History()
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        cross_entropy_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        bar = tqdm(batches(train_images, train_labels, config.batch_size, shuffle=True,
                           generator=generator),
                   total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}",
                   disable=not progress, leave=False)
        for step, (images, labels) in enumerate(bar, start=1):
            x = pipeline.inputs(images, generator)
            with pipeline.autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                lr = schedule.get_last_lr()[0]
                raise Diverged(f"Loss became {loss.item()} at epoch {epoch}, step {step} "
                               f"(learning rate {lr:.4g}): lower Config.lr, or check the "
                               f"input data.", epoch, step, lr, history)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if on_step is not None:
                on_step((epoch - 1) * steps_per_epoch + step, model,
                        functools.partial(_batch_loss, model, x, labels, config),
                        schedule.get_last_lr()[0])
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            loss_sum += loss.detach() * len(labels)
            cross_entropy_sum += F.cross_entropy(logits.detach().float(), labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
        n = len(train_labels)
        test_loss, test_accuracy = evaluate(model, data.test_images, data.test_labels, pipeline)
        history.append(train_loss=loss_sum.item() / n,
                       train_cross_entropy=cross_entropy_sum.item() / n,
                       train_accuracy=correct.item() / n,
                       test_loss=test_loss, test_accuracy=test_accuracy,
                       lr=schedule.get_last_lr()[0], seconds=time.perf_counter() - start)
        if progress:
            tqdm.write(_format_epoch(epoch, history))
    return history


def _batch_loss(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                config: Config) -> torch.Tensor:
    """The training loss of one batch, as :func:`fit` computes it but in fp32 (outside
    autocast, which :func:`fit` enters for its forward pass only)."""
    return F.cross_entropy(model(x.float()), labels, label_smoothing=config.label_smoothing)


def _format_epoch(epoch: int, history: History) -> str:
    row = history.rows()[-1]
    return (f"epoch {epoch:2d}  train loss {row['train_loss']:.3f} "
            f"acc {row['train_accuracy']:.2%}  test loss {row['test_loss']:.3f} "
            f"acc {row['test_accuracy']:.2%}  lr {row['lr']:.3g}  {row['seconds']:.1f}s")
