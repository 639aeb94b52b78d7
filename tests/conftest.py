"""Tiny synthetic CIFAR-10 look-alikes, written to temporary folders, and a runner of
Python in a fresh process."""

import hashlib
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torchvision

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def synthetic_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n uint8 images (n, 3, 32, 32) whose class (n,) is readable from their colour and
    a bar position, so that a small network can learn them in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        images[i, label % 3] += 120
        images[i, :, 3 * label: 3 * label + 3, :] = 250
    return images, labels


def run_python(*args: str, timeout: float) -> str:
    """Run this interpreter with ``args`` in a fresh process; assert that it exits with 0
    (the message shows the end of its stderr) and return what it printed."""
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


#: $NORMLAB_CACHE of the environment that runs the tests (None: normlab's default,
#: ~/.cache/normlab), read before :func:`_isolated_dirs` gives every test its own.
OUTER_CACHE = os.environ.get("NORMLAB_CACHE")


@pytest.fixture
def outer_cache(monkeypatch):
    """The decoded-data cache of the environment that runs the tests, for tests that read
    the real CIFAR-10 ($NORMLAB_DATA): its 60,000 images are decoded once there, not once
    per test (about 16 s each)."""
    if OUTER_CACHE:
        monkeypatch.setenv("NORMLAB_CACHE", OUTER_CACHE)
    else:
        monkeypatch.delenv("NORMLAB_CACHE")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own cache and results folders, and none of the settings that
    $NORMLAB_DATA, $NORMLAB_PROFILE and $NORMLAB_TRAIN make."""
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NORMLAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.delenv("NORMLAB_PROFILE", raising=False)
    monkeypatch.delenv("NORMLAB_TRAIN", raising=False)


def write_image_folder(root, n_train: int, n_test: int):
    """train/<class>/NNNN.png and test/<class>/NNNN.png of synthetic images under ``root``."""
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = synthetic_images(n, seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            torchvision.io.write_png(image, str(folder / f"{i:04d}.png"))
    return root


@pytest.fixture
def image_folder(tmp_path):
    """train/<class>/NNNN.png (8 per class) and test/<class>/NNNN.png (3 per class)."""
    return write_image_folder(tmp_path / "cifar-folder", 80, 30)


@pytest.fixture
def canonical_cifar(tmp_path, monkeypatch):
    """A fake cifar-10-batches-py, with torchvision's MD5 list patched to its files."""
    root = tmp_path / "cifar-canonical"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    cls = torchvision.datasets.CIFAR10

    def write(name, obj):
        data = pickle.dumps(obj)
        (folder / name).write_bytes(data)
        return [name, hashlib.md5(data).hexdigest()]

    train_list = []
    for b in range(5):
        images, labels = synthetic_images(10, seed=b)
        train_list.append(write(f"data_batch_{b + 1}", {
            "data": images.numpy().reshape(10, -1), "labels": labels.tolist()}))
    images, labels = synthetic_images(10, seed=9)
    test_list = [write("test_batch", {"data": images.numpy().reshape(10, -1),
                                      "labels": labels.tolist()})]
    meta_md5 = write("batches.meta", {"label_names": CLASSES})[1]
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    return root


@pytest.fixture
def tiny_data():
    """A CIFAR10 in memory: 200 training and 50 test synthetic images."""
    from normlab.data import CIFAR10

    train = synthetic_images(200, 0)
    test = synthetic_images(50, 1)
    return CIFAR10(*train, *test, CLASSES, "synthetic-test")
