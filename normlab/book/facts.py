"""Facts: what a chapter shows of its trained models, computed once and stored as JSON.

A fact is the JSON value (numbers, lists, tables as records) that one named function
computes from some results: a flip-averaged accuracy, activation statistics, the accuracy
with batch statistics. :func:`stored` returns it from
``results_dir()/<profile>/facts/<name>-<key>.json``, or computes it there and writes it
(atomically). The key is a hash of what determines the value: the results' keys and
tensor checksums and the fact's parameters; the record also keeps the code's revision
(:func:`revision`: the source of the function that computes it and of
:mod:`normlab.book.probes`), and a fact stored by another revision is computed again.

With ``$NORMLAB_TRAIN=never`` nothing is computed: a missing or outdated fact raises
FileNotFoundError naming it, and so does evaluating a trained model at all
(:meth:`normlab.book.runs.Result.model`): a build from committed results evaluates no model.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..data import CIFAR10
from ..store import atomic_write_json
from . import probes
from .cache import results_dir
from .runs import Result, resolve_profile, train_mode, TRAIN_ENV

FACTS_FOLDER = "facts"


def revision(compute: Callable) -> str:
    """Hex digest (12 characters) of the source of the function ``compute`` and of
    :mod:`normlab.book.probes`, which evaluates the models: a change to either may change
    the fact it computes (a change elsewhere in ``compute``'s module does not)."""
    digest = hashlib.sha256(inspect.getsource(compute).encode())
    digest.update(inspect.getsource(probes).encode())
    return digest.hexdigest()[:12]


def fact_path(name: str, results: Sequence[Result], params: dict, profile: str) -> Path:
    """Where the fact ``name`` of ``results`` with ``params`` (JSON values) is stored:
    ``results_dir()/<profile>/facts/<name>-<key>.json``."""
    determining = {"fact": name, "params": params,
                   "results": [[r.info["key"], r.info.get("tensors_sha256"), r.seconds]
                               for r in results]}
    key = hashlib.sha256(json.dumps(determining, sort_keys=True).encode()).hexdigest()[:16]
    return results_dir() / profile / FACTS_FOLDER / f"{name}-{key}.json"


def stored(name: str, compute: Callable[[], object], results: Sequence[Result],
           data: CIFAR10, params: dict | None = None, profile: str | None = None):
    """The fact ``name``: ``compute()`` of ``results`` on ``data`` (its identity and test
    split's size are keyed) with ``params`` (a JSON-able dict),
    read from :func:`fact_path` where it was stored by this revision of the code that
    computes it (:func:`revision` of ``compute``), else computed and stored.
    ``profile`` defaults to the current one. Returns the JSON value (dict keys are strings).

    Raises:
        FileNotFoundError: the fact is missing or outdated and ``$NORMLAB_TRAIN`` is
            ``never``; the message names it and says how to compute it.
        ValueError: the stored file does not load (damaged): the message names it.
    """
    profile = resolve_profile(profile)
    params = json.loads(json.dumps({**(params or {}), "data": data.identity,
                                    "test_images": len(data.test_labels)}))
    path = fact_path(name, results, params, profile)
    code = revision(compute)
    if path.exists():
        try:
            record = json.loads(path.read_text())
            value, its_revision = record["value"], record["revision"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"The fact {path} does not load ({type(error).__name__}): "
                             f"delete it, and it is computed again.") from error
        if its_revision == code:
            return value
    if train_mode() == "never":
        state = "outdated (computed by another revision of the code)" if path.exists() else "missing"
        raise FileNotFoundError(
            f"The fact {name!r} of {len(results)} result{'s' * (len(results) != 1)} is "
            f"{state}: {path}, and {TRAIN_ENV}=never forbids evaluating a model. Compute it "
            f"(`python -m normlab reproduce`, or unset {TRAIN_ENV}) and commit results/.")
    value = json.loads(json.dumps(compute()))
    atomic_write_json({"fact": name, "params": params, "revision": code,
                       "results": [r.info["key"] for r in results], "value": value}, path)
    return value
