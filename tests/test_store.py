"""Atomic writes when the disk fills, and folder settings that name a file."""

import errno
import os

import pytest
import torch

import normlab.store
from normlab.store import atomic_save, atomic_write_json, atomic_write_text, cache_dir


def fill_the_disk_after(monkeypatch, nbytes: int) -> None:
    """Files that :mod:`normlab.store` opens take ``nbytes`` and then fail as a full disk
    does: ``OSError(ENOSPC)`` from a write."""
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f, self.left = f, nbytes

        def write(self, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(normlab.store.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))


@pytest.mark.parametrize("write", [
    lambda path: atomic_write_json({"accuracy": [0.5] * 1000}, path),
    lambda path: atomic_save({"weights": torch.zeros(10_000)}, path),
], ids=["json", "tensors"])
def test_a_write_that_runs_out_of_space_says_so_and_leaves_the_previous_file(tmp_path, monkeypatch,
                                                                              write):
    target = tmp_path / "result.json"
    atomic_write_text("the previous result", target)
    fill_the_disk_after(monkeypatch, 100)
    with pytest.raises(OSError, match=rf"No space left on {target}: free space and rerun") as error:
        write(target)
    assert error.value.errno == errno.ENOSPC              # still recognisable as a full disk
    assert target.read_text() == "the previous result"
    assert os.listdir(tmp_path) == ["result.json"]        # no temporary file left


def test_other_write_errors_pass_unchanged(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(normlab.store.os, "fdopen", denied)
    with pytest.raises(PermissionError, match="Permission denied"):
        atomic_write_text("x", tmp_path / "r.txt")


@pytest.mark.parametrize("setting", ["/dev/null", "file", "file/below"])
def test_a_cache_setting_that_names_a_file_says_what_to_set(tmp_path, monkeypatch, setting):
    (tmp_path / "file").write_text("not a folder")
    path = setting if setting.startswith("/") else str(tmp_path / setting)
    monkeypatch.setenv("NORMLAB_CACHE", path)
    with pytest.raises(NotADirectoryError, match=rf"{path} is not a folder.*point NORMLAB_CACHE "
                                                 rf"at a folder"):
        cache_dir()
