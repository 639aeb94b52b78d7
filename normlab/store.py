"""Where normlab caches files, and how it writes them: atomically.

- :func:`cache_dir`: decoded data sets (``$NORMLAB_CACHE``, default ``~/.cache/normlab``);
  the book's results have their own folder (:func:`normlab.book.cache.results_dir`).
  :func:`folder` makes such a folder and says which setting to change where a file is in
  its place.

Every file is written to a temporary name in the same folder and then renamed
(:func:`os.replace` is atomic on POSIX and Windows), so an interrupted write leaves the
previous file or none, never half of one; a temporary file that a killed write left
behind is removed by the next write of the same file. A write that fails removes its
temporary file, and one that fails for lack of space (a full disk or quota) raises an
:class:`OSError` with the same ``errno`` (``ENOSPC``, ``EDQUOT``) that names the file:
"No space left on <path>: free space and rerun". The file gets the permissions a plain
``open(path, "w")`` would give it (0o666 less the process's umask), not the owner-only
0o600 of the temporary file.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import tempfile
import time
from pathlib import Path

import torch

CACHE_ENV = "NORMLAB_CACHE"


def folder(path: str | os.PathLike, setting: str) -> Path:
    """``path`` as a folder, created (with its parents) if missing.

    Raises:
        NotADirectoryError: a file (``/dev/null``, say) is at ``path`` or above it; the
            message says to point ``setting`` (an environment variable) at a folder.
        OSError: the folder cannot be made for another reason (no permission, a read-only
            disk), as :meth:`pathlib.Path.mkdir` raises it.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise NotADirectoryError(
            errno.ENOTDIR, f"{path} is not a folder (a file is in its place or above it): "
                           f"point {setting} at a folder, or remove the file") from error
    return path


def cache_dir() -> Path:
    """Folder for decoded data (created on demand): ``$NORMLAB_CACHE``, else
    ``~/.cache/normlab``.

    Raises:
        NotADirectoryError, OSError: as :func:`folder`.
    """
    return folder(Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "normlab")
                  .expanduser(), CACHE_ENV)


def _umask() -> int:
    """The process's file-mode creation mask (``os.umask`` only reads it by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: A temporary file of a write this old (seconds) was left by a killed process: the next
#: write of the same file removes it (a younger one may belong to a write in progress).
STALE_SECONDS = 600


#: ``errno`` values of a write that failed for lack of space: a full disk, a full quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _no_space(error: BaseException) -> OSError | None:
    """The :class:`OSError` of lack of space that ``error`` is or arose from (torch.save
    raises a RuntimeError of its own while it handles one), or None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return error
        error = error.__cause__ or error.__context__
    return None


def _atomic_write(path: Path, write) -> None:
    try:
        _write_through_temporary(path, write)
    except Exception as error:
        if (full := _no_space(error)) is not None:
            raise OSError(full.errno, f"No space left on {path}: free space and "
                                      f"rerun") from error
        raise


def _write_through_temporary(path: Path, write) -> None:
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
