"""Where normlab caches files, and how it writes them: atomically.

- :func:`cache_dir`: decoded data sets (``$NORMLAB_CACHE``, default ``~/.cache/normlab``);
  the book's results have their own folder (:func:`normlab.book.cache.results_dir`).

Every file is written to a temporary name in the same folder and then renamed
(:func:`os.replace` is atomic on POSIX and Windows), so an interrupted write leaves the
previous file or none, never half of one; a temporary file that a killed write left
behind is removed by the next write of the same file. The file gets the permissions a plain
``open(path, "w")`` would give it (0o666 less the process's umask), not the owner-only
0o600 of the temporary file.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
from pathlib import Path

import torch

CACHE_ENV = "NORMLAB_CACHE"


def cache_dir() -> Path:
    """Folder for decoded data (created on demand)."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "normlab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    """The process's file-mode creation mask (``os.umask`` only reads it by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: A temporary file of a write this old (seconds) was left by a killed process: the next
#: write of the same file removes it (a younger one may belong to a write in progress).
STALE_SECONDS = 600


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_SECONDS:
                stale.unlink()
        except FileNotFoundError:   # another writer removed or renamed it meanwhile
            pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a temporary file and a rename. Load such files
    with ``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists and
    dicts only, never code."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` through a temporary file and a rename."""
    _atomic_write(Path(path), lambda f: f.write(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) through a temporary file and a rename."""
    atomic_write_bytes(text.encode(), path)


def atomic_write_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON through a temporary file and a rename."""
    atomic_write_text(json.dumps(obj, indent=1) + "\n", path)
