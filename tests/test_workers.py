"""Sweeps: many configs trained in parallel by local worker processes or on Ray."""

import os
import sys
from concurrent.futures.process import BrokenProcessPool

import pytest
import torch

from normlab import Config
from normlab.book import load_result, prepare_data
from normlab.book.workers import WorkerPool, run_many

from conftest import write_image_folder


def tiny(**changes):
    return Config(**{"epochs": 1, "batch_size": 32, "lr": 0.05, "widths": (8,) * 6, **changes})


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "folder", 160, 30)


def test_workers_train_each_config_once_report_failures_and_resume(folder):
    diverges = tiny(lr=1e6, norm="none", label_smoothing=0.0)
    fails = tiny(batch_size=1000)          # one step per epoch: too few for OneCycle
    configs = [tiny(), tiny(norm="group"), tiny(), diverges, fails]
    summary = run_many(configs, "full", workers=2, root=folder, progress=False)
    assert set(summary.trained) == {tiny(), tiny(norm="group"), diverges} and not summary.found
    assert summary.diverged == [diverges]
    assert [c for c, _ in summary.failed] == [fails]
    assert "ValueError: OneCycle needs more than" in summary.failed[0][1]
    assert str(summary).startswith("3 trained (1 of them diverged), 0 found, 1 failed in ")
    data = prepare_data(tiny(), folder)
    results = [load_result(c, data, "full") for c in (tiny(), tiny(norm="group"))]
    assert all(r is not None and r.test_accuracy > 0 for r in results)

    again = run_many(configs, "full", workers=2, root=folder, progress=False)
    assert set(again.found) == {tiny(), tiny(norm="group"), diverges} and not again.trained
    nothing_to_train = run_many(configs[:3], "full", workers=2, root=folder, progress=False)
    assert len(nothing_to_train.found) == 2 and not nothing_to_train.failed


def test_sweeps_share_a_worker_pool_which_replaces_a_dead_worker(folder, monkeypatch):
    with WorkerPool(2) as pool:
        # the sweeps start no workers of their own: they train on the pool's
        monkeypatch.setattr(sys.modules["normlab.book.workers"], "WorkerPool", None)
        for seed in (0, 1):
            summary = run_many([tiny(seed=seed), tiny(norm="layer", seed=seed)], "full",
                               workers=2, root=folder, progress=False, pool=pool)
            assert len(summary.trained) == 2 and not summary.failed
            assert summary.where.startswith("2 workers")
        workers = {pool.submit(os.getpid).result() for _ in range(8)}
        assert 1 <= len(workers) <= 2
        with pytest.raises(BrokenProcessPool):            # a worker dies mid-run ...
            pool.submit(os._exit, 1).result()
        assert pool.submit(os.getpid).result() not in workers   # ... new ones take over


def test_worker_processes_and_this_process_train_the_same_numbers(folder):
    configs = [tiny(seed=1), tiny(seed=2)]
    data = prepare_data(tiny(), folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # the workers' (the order of a sum depends on it)
    try:
        here = run_many(configs, "full", workers=1, root=folder, progress=False)
    finally:
        torch.set_num_threads(threads)
    first = [load_result(c, data, "full").history.train_loss for c in configs]
    there = run_many(configs, "full", workers=2, threads=1, root=folder, progress=False,
                     retrain=True)
    assert here.trained == there.trained == configs and "2 workers" in there.where
    assert [load_result(c, data, "full").history.train_loss for c in configs] == first
    assert torch.get_num_threads() == threads       # this process's threads are its own


def test_bad_worker_counts_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        run_many([tiny()], "full", workers=0)


def test_a_sweep_on_a_local_ray_cluster(folder):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install normlab[ray])")
    try:
        summary = run_many([tiny(), tiny(norm="layer"), tiny(batch_size=1000)],
                           "full", ray_address="local", root=folder, progress=False)
    finally:
        ray.shutdown()
    assert set(summary.trained) == {tiny(), tiny(norm="layer")}
    assert "OneCycle needs more than" in summary.failed[0][1]
    assert load_result(tiny(norm="layer"), prepare_data(tiny(), folder), "full") is not None


def test_more_workers_than_cores_are_capped_at_the_cores_saying_so():
    from normlab.book.workers import WorkerPool, _cores

    with pytest.warns(UserWarning, match=rf"999 workers asked for, on {_cores()} CPU cores: "
                                         rf"starting {_cores()}"):
        assert WorkerPool(999).workers == _cores()


def test_ray_without_ray_is_said_before_any_data_loads(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (
        (_ for _ in ()).throw(ImportError("no ray")) if name == "ray" else real_import(name, *a, **k)))
    monkeypatch.setattr("normlab.book.workers.data_for", lambda *a, **k: pytest.fail("data loaded"))
    with pytest.raises(ImportError, match=r"--ray needs Ray: pip install 'normlab\[ray\]'"):
        run_many([tiny()], "full", ray_address="local", root=tmp_path, progress=False)


def test_a_gpu_the_ray_cluster_lacks_is_refused_not_waited_for(folder):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install normlab[ray])")
    try:
        with pytest.raises(ValueError, match=r"--gpus-per-run 0.5 asks for more GPU than the Ray "
                                             r"cluster at local has \(0\)"):
            run_many([tiny()], "full", ray_address="local", gpus_per_run=0.5, root=folder,
                     progress=False)
    finally:
        ray.shutdown()
