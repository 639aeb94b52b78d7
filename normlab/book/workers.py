"""Many runs at once: independent configs trained in parallel, by local worker processes or
on a Ray cluster (Moritz et al. 2018), each result written atomically into one results
folder.

A worker trains one config with a few threads and sends back the two files of its result
(:func:`train_files`); the process that started the sweep writes them. Workers on other
machines (Ray) therefore need the data (``$NORMLAB_DATA`` there) but not the results
folder, and their results are the same files, found the same way. A run that fails
(divergence, a bad config) is reported in the :class:`Summary` and the others go on; a
sweep that is interrupted resumes where it stopped, since results already written are
found, not trained again.

On this book's 2-core CPU, two runs with one thread each train about 15 % more images per
second together than one run with two threads (``benchmarks/throughput.py --workers``), so
the default is one worker per core, each with one thread. On a GPU the local default is one
worker (every local worker would share the first GPU); Ray spreads runs over several GPUs.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context

import torch
from tqdm.auto import tqdm

from ..data import load_data
from ..store import atomic_write_bytes
from ..train import Config
from .cache import RESULTS_ENV, cache_key, result_paths, results_dir
from .runs import check_writable, data_for, processor_name, resolve_profile, run


@dataclass
class Summary:
    """What a sweep did: its ``configs`` (each once, in order), ``where`` it trained them,
    those whose result was ``found`` in the results folder, ``trained`` (of which
    ``diverged``: their loss became NaN or infinite, a result too), or ``failed`` (with the
    error, one line), and its wall time (seconds)."""

    configs: list[Config] = field(default_factory=list)
    where: str = ""
    found: list[Config] = field(default_factory=list)
    trained: list[Config] = field(default_factory=list)
    diverged: list[Config] = field(default_factory=list)
    failed: list[tuple[Config, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        diverged = f" ({len(self.diverged)} of them diverged)" if self.diverged else ""
        lines = [f"{len(self.trained)} trained{diverged}, {len(self.found)} found, "
                 f"{len(self.failed)} failed in {self.seconds / 60:.1f} minutes"]
        lines += [f"  failed: {config}: {error}" for config, error in self.failed]
        return "\n".join(lines)


def default_workers() -> int:
    """One worker per CPU core this process may use (each with one thread); one where
    there is a GPU."""
    return 1 if torch.cuda.is_available() else _cores()


def _cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_DATA = {}   # per worker process: CIFAR-10 from each root, loaded once


class WorkerPool:
    """``workers`` local worker processes (a fresh interpreter each, started when the first
    run is submitted), which the sweeps given it share (:func:`run_many`'s ``pool``): each
    process starts once, about 6 s of imports, and keeps the data it loaded. A context
    manager; leaving it stops the processes. Where one died (killed, out of memory), its
    sweep reports the runs it lost, and the next submission starts new processes."""

    def __init__(self, workers: int):
        self.workers, self._executor = capped_workers(workers), None

    def submit(self, function, *args) -> Future:
        """``function(*args)`` in a worker process (picklable, as for
        :class:`concurrent.futures.ProcessPoolExecutor`); returns its future."""
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        try:
            return self._executor.submit(function, *args)
        except BrokenProcessPool:
            self._stop()
            return self.submit(function, *args)

    def _stop(self) -> None:
        """Stop the processes (queued runs are cancelled, running ones finish)."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exception) -> None:
        self._stop()


def train_files(config: Config, profile: str, root: str | None, download: bool, device: str,
                threads: int) -> tuple[str, bytes, bytes]:
    """Train ``config`` in this process with ``threads`` threads, into a temporary results
    folder, and return the result's file stem, its JSON record and its tensor file."""
    torch.set_num_threads(threads)
    if root not in _DATA:
        _DATA[root] = load_data(root, download)
    data = _DATA[root].subset(config.train_subset, config.test_subset)
    with tempfile.TemporaryDirectory() as folder:
        previous = os.environ.get(RESULTS_ENV)
        os.environ[RESULTS_ENV] = folder
        try:
            result = run(config, data, profile=profile, device=device, progress=False,
                         retrain=True, exact_precision=True)
            record, tensors = result_paths(config, result.info["key"], profile)
            return record.stem, record.read_bytes(), tensors.read_bytes()
        finally:
            if previous is None:
                del os.environ[RESULTS_ENV]
            else:
                os.environ[RESULTS_ENV] = previous


def _write(profile: str, stem: str, record: bytes, tensors: bytes) -> None:
    folder = results_dir() / profile
    atomic_write_bytes(tensors, folder / f"{stem}.pt")      # the record last: it marks a result
    atomic_write_bytes(record, folder / f"{stem}.json")


def _missing(configs: list[Config], data: dict, profile: str, device: str,
             retrain: bool) -> tuple[list[Config], list[Config]]:
    """``configs`` split into those whose result is in the results folder and those to
    train; ``data`` by subset (:func:`normlab.book.runs.data_for`)."""
    found, todo, keys = [], [], set()
    for config in configs:
        key = cache_key(config, data[(config.train_subset, config.test_subset)], profile, device)
        record, tensors = result_paths(config, key, profile)
        if key in keys:   # another config of the same result ("auto" resolved to a named one)
            found.append(config)
            continue
        keys.add(key)
        (todo if retrain or not (record.exists() and tensors.exists()) else found).append(config)
    return found, todo


def _diverged(config: Config, data: dict, profile: str, device: str) -> bool:
    """Whether the result of ``config`` in the results folder records a divergence."""
    key = cache_key(config, data[(config.train_subset, config.test_subset)], profile, device)
    record = json.loads(result_paths(config, key, profile)[0].read_text())
    return record["info"].get("diverged") is not None


def run_many(configs: list[Config], profile: str | None = None, *, workers: int | None = None,
             threads: int = 1, ray_address: str | None = None, gpus_per_run: float = 0.0,
             root: str | os.PathLike | None = None, download: bool = True, device: str = "auto",
             retrain: bool = False, progress: bool = True, pool: WorkerPool | None = None
             ) -> Summary:
    """Train every config of ``configs`` that has no result yet, in parallel; one progress
    bar for the sweep. Returns the :class:`Summary`. Each trains in its own precision, even
    where the device emulates it (``exact_precision`` of :func:`normlab.book.run`): the
    smoke profile's configs name the native one (:func:`normlab.book.studies.book_config`).

    Args:
        workers: local worker processes (default :func:`default_workers`; 1 trains in this
            process), each with ``threads`` threads; started for this sweep and stopped
            after it, unless ``pool`` (a :class:`WorkerPool`) gives them, and their number.
        ray_address: run on the Ray cluster at this address instead (``"local"`` starts
            one on this machine), each run with ``threads`` CPUs and ``gpus_per_run`` of a
            GPU (a fraction: several of these small models share one GPU).
        root, download, device, retrain: as in :func:`normlab.book.run`.

    Raises:
        ValueError: ``workers`` or ``threads`` below 1.
        ImportError: ``ray_address`` without Ray installed (``pip install normlab[ray]``),
            said before any data loads.
        ValueError: ``gpus_per_run`` above the GPUs of the Ray cluster.

    More ``workers`` than CPU cores are capped at the cores, with a warning
    (:func:`capped_workers`).
    """
    if (workers is not None and workers < 1) or threads < 1:
        raise ValueError(f"workers and threads must be at least 1, got {workers} and {threads}.")
    profile = resolve_profile(profile)
    check_writable(results_dir() / profile)
    start = time.perf_counter()
    workers = pool.workers if pool is not None else capped_workers(workers or default_workers())
    ray = _ray(ray_address, gpus_per_run) if ray_address is not None else None
    where = (f"Ray cluster {ray_address}, {threads} CPU and {gpus_per_run:g} GPU per run"
             if ray_address is not None else
             f"{workers} worker{'s' * (workers > 1)} x {threads} thread{'s' * (threads > 1)} "
             f"on {processor_name()}")
    summary = Summary(list(dict.fromkeys(configs)), where)
    data = data_for(summary.configs, root, download)
    summary.found, todo = _missing(summary.configs, data, profile, device, retrain)
    arguments = [(config, profile, None if root is None else str(root), download, device, threads)
                 for config in todo]
    bar = tqdm(total=len(todo), desc="sweep", disable=not progress or not todo)
    if ray_address is not None:
        outcomes = _on_ray(ray, arguments, threads, gpus_per_run)
    elif workers == 1 or len(todo) <= 1:
        outcomes = _here(todo, data, profile, device)
    else:
        outcomes = _on_processes(arguments, workers, pool)
    for config, outcome in outcomes:
        if isinstance(outcome, BaseException):
            summary.failed.append((config, f"{type(outcome).__name__}: {outcome}".splitlines()[0]))
        else:
            if outcome is not None:   # files from another process: written here
                _write(profile, *outcome)
            summary.trained.append(config)
            if _diverged(config, data, profile, device):
                summary.diverged.append(config)
        bar.update()
    bar.close()
    summary.trained.sort(key=todo.index)       # in the sweep's order, not the finishing order
    summary.diverged.sort(key=todo.index)
    summary.failed.sort(key=lambda item: todo.index(item[0]))
    summary.seconds = time.perf_counter() - start
    return summary


def _here(configs: list[Config], data: dict, profile: str, device: str):
    """(config, None or the exception) for each run, trained one after another in this
    process, with its threads, straight into the results folder."""
    for config in configs:
        try:
            run(config, data[(config.train_subset, config.test_subset)], profile=profile,
                device=device, progress=False, retrain=True, exact_precision=True)
            yield config, None
        except Exception as error:   # reported, and the sweep goes on
            yield config, error


def _on_processes(arguments: list[tuple], workers: int, pool: WorkerPool | None):
    """(config, files or the exception) for each run, as they finish in worker processes:
    those of ``pool``, or ``workers`` started for these runs."""
    with WorkerPool(min(workers, len(arguments))) if pool is None else nullcontext(pool) as on:
        futures = {on.submit(train_files, *args): args[0] for args in arguments}
        try:
            for future in as_completed(futures):
                error = future.exception()
                yield futures[future], error if error is not None else future.result()
        finally:   # a sweep stopped early leaves no queued runs on a shared pool
            for future in futures:
                future.cancel()


def _ray(address: str, gpus_per_run: float):
    """Ray, connected to the cluster at ``address`` (``"local"``: one started here), before
    any data loads.

    Raises:
        ImportError: Ray is not installed.
        ValueError: ``gpus_per_run`` asks for a GPU the cluster does not have (Ray would
            wait for it forever).
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError("--ray needs Ray: pip install 'normlab[ray]' (or pip install ray).") \
            from error
    ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
             log_to_driver=False, include_dashboard=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_run > gpus:
        raise ValueError(f"--gpus-per-run {gpus_per_run:g} asks for more GPU than the Ray "
                         f"cluster at {address} has ({gpus:g}): runs would wait for it "
                         f"forever. Use --gpus-per-run 0 (CPU), or a cluster with GPUs.")
    return ray


def capped_workers(workers: int) -> int:
    """``workers``, or the CPU cores this process may use where it asks for more (each worker
    is a process of about 1 GB training with its own thread), saying so."""
    cores = _cores()
    if workers > cores:
        warnings.warn(f"{workers} workers asked for, on {cores} CPU cores: starting {cores} "
                      f"(more would only share the cores, at about 1 GB each).", stacklevel=3)
        return cores
    return workers


def _on_ray(ray, arguments: list[tuple], threads: int, gpus_per_run: float):
    """(config, files or the exception) for each run, as they finish on the Ray cluster."""
    task = ray.remote(num_cpus=threads, num_gpus=gpus_per_run, max_retries=0)(train_files)
    pending = {task.remote(*args): args[0] for args in arguments}
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        config = pending.pop(ref)
        try:
            yield config, ray.get(ref)
        except ray.exceptions.RayTaskError as error:   # the run raised: report its error
            yield config, error.cause
        except ray.exceptions.RayError as error:      # the worker died (killed, out of memory)
            yield config, error

