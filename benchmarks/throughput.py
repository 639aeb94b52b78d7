"""Training throughput: the usual notebook pipeline against normlab's, same network and steps.

Both train the book's network (batch norm) with the same batch size, optimizer and number
of steps, on the same CIFAR-10 images ($NORMLAB_DATA), on the device ``fit`` would choose
(``normlab.choose_device``: a GPU where there is one, with no change to the command):

- ``baseline``: what such notebooks do. A Dataset that returns one PIL image at a time
  (exactly as ``torchvision.datasets.CIFAR10.__getitem__`` does, over the same in-memory
  arrays), torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip,
  ToTensor, Normalize), a DataLoader with 2 workers, each batch moved to the device, fp32,
  NCHW.
- ``sweep``: ``--workers`` runs of normlab's pipeline at once, one thread each, as
  ``python -m normlab reproduce`` trains a sweep; ``sweep_speedup`` is their summed rate
  against the usual pipeline's, which trains one run after another.
- ``normlab``: uint8 data in memory, per-image crop and flip (the recipe's,
  :class:`normlab.Config`) on the whole batch on the compute device, channels_last, bf16
  autocast where supported, the C library told to keep freed memory (``normlab.train``),
  each choice measured on top of the previous one (``ablation``), then torch.compile,
  which ``fit`` does not use. ``speedup`` is for what ``fit`` does.

Each measurement runs in a fresh Python process (as a notebook's kernel starts), so that
no choice, such as the allocator setting, which lasts for the process, reaches another
pipeline. Each pipeline is measured ``--repeats`` times, the pipelines taking turns, and
the median is reported: on a shared machine one busy moment should not decide the ratio.

Prints one JSON line: images/second of each, ``speedup`` (their ratio, one run), the
sweep's rate and ``sweep_speedup``, the warm-up seconds of each (``+compile``: the
compilation), the minor page faults of each pipeline's process per step, the model's training FLOPs per image
(``torch.utils.flop_counter``), achieved FLOP/s, the rate of a
large dense matrix product in the same precision on the same device (the practical
ceiling for this arithmetic) and the peak resident memory of normlab's process (MiB); on a
GPU also its name and the peak memory normlab's tensors took on it (MiB). A GPU's queued
work is waited for before each clock reading.
``--output`` also writes the record to a file; the book's appendix shows every record in
``results/benchmarks/``, written with
``--output results/benchmarks/throughput-$(date +%Y%m%d-%H%M).json``. ``--quick`` runs few
steps and skips torch.compile (under a minute).

    python benchmarks/throughput.py [--quick] [--steps N] [--repeats R] [--batch-size B]
                                    [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

import normlab as nl
from normlab.book.runs import processor_name
from normlab.store import atomic_write_json
from normlab.book.workers import default_workers
from normlab.train import Pipeline


class PILCIFAR(Dataset):
    """One (PIL image -> transform, label) per index, as torchvision's CIFAR10 serves it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()   # (N, 32, 32, 3) like CIFAR10.data
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def _minor_page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _steps(model, optimizer, batches, steps, autocast, device, barrier=None):
    """Run ``steps`` training steps over the (x, y) iterator on ``device``; return images
    per second, the process's minor page faults per step (the first 3 steps, warm-up, are
    not counted) and the warm-up's seconds (torch.compile compiles then). With a
    ``barrier``, the timed steps start when every process of a sweep has warmed up."""
    model.train()
    seen, start, faults = 0, time.perf_counter(), None
    for step, (x, y) in enumerate(batches):
        if step == 3:
            _synchronize(device)
            warmup = time.perf_counter() - start
            if barrier is not None:
                barrier.wait()
            start, seen, faults = time.perf_counter(), 0, _minor_page_faults()
        with autocast():
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if step + 1 == steps + 3:
            break
    _synchronize(device)
    return seen / (time.perf_counter() - start), (_minor_page_faults() - faults) / steps, warmup


def baseline(data, batch_size, steps):
    """The usual notebook's training step, on the device normlab would choose (a notebook
    moves its model and each batch there); returns images per second, page faults per
    step and the warm-up's seconds."""
    device = nl.choose_device()
    mean, std = nl.channel_stats(data.train_images)
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean.tolist(), std.tolist())])
    loader = DataLoader(PILCIFAR(data.train_images, data.train_labels, transform),
                        batch_size=batch_size, shuffle=True, num_workers=2,
                        persistent_workers=True)
    torch.manual_seed(0)
    model = nl.Net("batch").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    def forever():
        while True:
            for x, y in loader:
                yield x.to(device), y.to(device)

    return _steps(model, optimizer, forever(), steps,
                  lambda: torch.autocast(device.type, enabled=False), device)


def normlab_pipeline(data, batch_size, steps, precision="auto", channels_last=True,
                     keep_freed_memory=False, compile=False, barrier=None):
    """normlab's training step with the given choices; returns images per second, page
    faults per step and the warm-up's seconds."""
    if keep_freed_memory:
        nl.train.keep_freed_memory()
    device = nl.choose_device()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # the recipe's crops and flips, as fit makes them
    pipeline = Pipeline.for_config(nl.Config(precision=precision), data, memory_format=memory_format)
    torch.manual_seed(0)
    model = nl.Net("batch").to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    images, labels = data.train_images.to(device), data.train_labels.to(device)
    generator = torch.Generator().manual_seed(0)

    def forever():
        while True:
            for x, y in nl.data.batches(images, labels, batch_size, shuffle=True,
                                        generator=generator):
                yield pipeline.inputs(x, generator), y

    step_model = torch.compile(model) if compile else model
    return _steps(step_model, optimizer, forever(), steps, pipeline.autocast, device, barrier)


#: Each choice added on top of the previous one: (name, keyword arguments).
CHOICES = [
    ("in_memory_fp32_nchw", {"precision": "fp32", "channels_last": False}),
    ("+channels_last", {"precision": "fp32"}),
    ("+auto_precision", {"precision": "auto"}),
    ("+keep_freed_memory", {"keep_freed_memory": True}),   # what normlab.train.fit does
    ("+compile", {"keep_freed_memory": True, "compile": True}),   # not used by fit
]
FIT = "+keep_freed_memory"


def measure(name: str, data_dir: str | None, batch_size: int, steps: int) -> dict:
    """Images per second of pipeline ``name`` (``baseline`` or a choice of
    :data:`CHOICES`), minor page faults per step, the peak resident memory (MiB) of
    the process that ran it and, on a GPU, the peak memory its tensors took there (MiB)."""
    data = nl.load_data(data_dir)
    if name == "baseline":
        rate, faults, warmup = baseline(data, batch_size, steps)
    else:
        rate, faults, warmup = normlab_pipeline(data, batch_size, steps, **dict(CHOICES)[name])
    device = nl.choose_device()
    return {"rate": rate, "faults": faults, "warmup": warmup,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device_memory": (torch.cuda.max_memory_allocated(device) / 2 ** 20
                              if device.type == "cuda" else None)}


def sweep_member(data_dir: str | None, batch_size: int, steps: int, barrier) -> float:
    """Images per second of normlab's pipeline (what ``fit`` does) with one thread, timed
    while the other members of the sweep train too."""
    torch.set_num_threads(1)
    rate, _, _ = normlab_pipeline(nl.load_data(data_dir), batch_size, steps, barrier=barrier,
                                  **dict(CHOICES)[FIT])
    return rate


def sweep_rate(workers: int, data_dir: str | None, batch_size: int, steps: int) -> float:
    """Images per second of ``workers`` runs at once, one thread each, as ``python -m
    normlab reproduce`` trains a sweep: the sum of their rates over the same seconds."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(
            workers, mp_context=context, max_tasks_per_child=1) as pool:
        barrier = manager.Barrier(workers)
        futures = [pool.submit(sweep_member, data_dir, batch_size, steps, barrier)
                   for _ in range(workers)]
        return sum(future.result() for future in futures)


def training_flops_per_image(batch_size: int = 8) -> float:
    """FLOPs of one forward and backward pass, per image."""
    model = nl.Net("batch")
    x = torch.randn(batch_size, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch_size, dtype=torch.long)).backward()
    return counter.get_total_flops() / batch_size


def matmul_gflop_per_s(device: torch.device, dtype: torch.dtype, n: int = 2048,
                       repeats: int = 10) -> float:
    """GFLOP/s of an (n, n) @ (n, n) matrix product in ``dtype`` on ``device``: what the
    machine sustains on the densest arithmetic there is."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few steps, one process for every "
                        "pipeline: a check that it runs, under a minute")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per pipeline")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements per pipeline (interleaved; the median is reported)")
    parser.add_argument("--batch-size", type=int, default=nl.Config().batch_size)
    parser.add_argument("--data", help="CIFAR-10 folder (default $NORMLAB_DATA)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="runs of the sweep measurement, one thread each")
    parser.add_argument("--output", help="also write the JSON record to this file")
    args = parser.parse_args(argv)
    steps, repeats = (12, 1) if args.quick else (args.steps, args.repeats)
    names = ["baseline"] + [name for name, kw in CHOICES if not (args.quick and kw.get("compile"))]
    samples = {name: [] for name in names}
    # a fresh process per measurement; interleaved, so that a busy moment slows every pipeline.
    # --quick (a check that it runs) measures them all in one process, in the order of
    # CHOICES, which adds keep_freed_memory (process-wide and lasting) last
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=None if args.quick else 1) as pool:
        for _ in range(repeats):
            for name in names:
                samples[name].append(
                    pool.submit(measure, name, args.data, args.batch_size, steps).result())

        sweeps = [sweep_rate(args.workers, args.data, args.batch_size, steps)
                  for _ in range(repeats)]

    def median(name, measured):
        return statistics.median(sample[measured] for sample in samples[name])

    base = median("baseline", "rate")
    ablation = {name: round(median(name, "rate"), 1) for name in names[1:]}
    ours = ablation[FIT]
    flops = training_flops_per_image()
    device = nl.choose_device()
    dtype = nl.choose_precision("auto", device)
    achieved, ceiling = ours * flops / 1e9, matmul_gflop_per_s(device, dtype)
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "device": device.type, "processor": processor_name(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "steps": steps, "repeats": repeats,
        "baseline_images_per_s": round(base, 1), "normlab_images_per_s": ours,
        "speedup": round(ours / base, 2),
        # a sweep: the usual pipeline trains one run after another, with every thread;
        # normlab trains `workers` runs at once, one thread each
        "sweep_workers": args.workers,
        "sweep_images_per_s": round(statistics.median(sweeps), 1),
        "sweep_speedup": round(statistics.median(sweeps) / base, 2),
        "normlab_precision": str(dtype),
        "ablation_images_per_s": ablation,
        "training_gflop_per_image": round(flops / 1e9, 4),
        "normlab_gflop_per_s": round(achieved, 1),
        "matmul_gflop_per_s": round(ceiling, 1),
        "fraction_of_matmul": round(achieved / ceiling, 3),
        "page_faults_per_step": {name: round(median(name, "faults")) for name in names},
        "warmup_s": {name: round(median(name, "warmup"), 2) for name in names},
        "peak_rss_mib": round(max(sample["rss"] for sample in samples[FIT]), 1),
        **({"peak_gpu_mib": round(max(sample["device_memory"] for sample in samples[FIT]), 1)}
           if device.type == "cuda" else {}),
    }
    print(json.dumps(record))
    if args.output:
        atomic_write_json(record, args.output)

if __name__ == "__main__":
    main()
