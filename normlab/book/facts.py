"""Facts: what a chapter shows of a trained model beyond its record, computed once and
stored as JSON.

A fact is the JSON value (numbers, lists, tables as columns) that one function computes
from a result and the data it was trained on: a flip-averaged accuracy, activation
statistics, the accuracy with batch statistics. Such a function is declared with
:func:`fact`; called, it returns the value from
``results_dir()/<profile>/facts/<name>-<key>.json``, or computes it and writes it there
(atomically). The key is a hash of what determines the value: the result's key and tensor
checksum (records written before checksums were kept have none: their key and training
seconds tell a retrained model apart), the data's identity and the function's other
arguments; the folder is the profile the result was found in. The record also keeps
the code's revision (:func:`revision`: the function's source, as imported, and that of
:mod:`normlab.book.probes`); a fact stored by another revision is computed again.

The revision does not see the core (:mod:`normlab.train`, the model, the data), nor other
functions a fact calls: a change there that alters a fact bumps ``normlab.__version__``,
which keys every result (:func:`normlab.book.cache.cache_key`) and so every fact.

With ``$NORMLAB_TRAIN=never`` nothing is computed: a missing or outdated fact raises
FileNotFoundError naming it, and evaluating a trained model at all raises RuntimeError
(:meth:`normlab.book.runs.Result.model`): a build from committed results evaluates no model.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path

from ..data import CIFAR10
from ..store import atomic_write_json
from . import probes
from .cache import results_dir
from .runs import Result, resolve_profile, train_mode, TRAIN_ENV

FACTS_FOLDER = "facts"
#: :mod:`normlab.book.probes` as imported (a file edited since is not what runs).
_PROBES_SOURCE = inspect.getsource(probes)


def revision(source: str) -> str:
    """Hex digest (12 characters) of a fact function's ``source`` and of
    :mod:`normlab.book.probes` (as imported), which evaluates the models: a change to
    either may change the fact (a change elsewhere in the function's module does not)."""
    digest = hashlib.sha256(source.encode())
    digest.update(_PROBES_SOURCE.encode())
    return digest.hexdigest()[:12]


def fact_path(name: str, result: Result, params: dict, profile: str) -> Path:
    """Where the fact ``name`` of ``result`` with ``params`` (JSON values, the data's
    identity among them) is stored: ``results_dir()/<profile>/facts/<name>-<key>.json``."""
    determining = {"fact": name, "params": params,
                   "results": [[result.info["key"], result.info.get("tensors_sha256"),
                                result.seconds]]}
    key = hashlib.sha256(json.dumps(determining, sort_keys=True).encode()).hexdigest()[:16]
    return results_dir() / profile / FACTS_FOLDER / f"{name}-{key}.json"


def fact(name: str, decode: Callable = lambda value: value) -> Callable:
    """Declare ``function(result, data, **params)`` a fact named ``name``: calling it
    returns ``decode`` of its JSON value, read from :func:`fact_path` where this revision of
    the function (:func:`revision` of its source when it was imported) stored it, else
    computed (the function returns the JSON-able value) and stored. ``data`` is the data
    the result was trained on (its identity and test split's size are keyed); the other
    arguments, defaults included, are the fact's parameters. The profile is the current one.

    The function called raises:
        FileNotFoundError: the fact is missing or outdated and ``$NORMLAB_TRAIN`` is
            ``never``; the message names it and says how to compute it.
        ValueError: the stored file does not load (damaged): the message names it.
    """
    def declare(function: Callable) -> Callable:
        code = revision(inspect.getsource(function))
        signature = inspect.signature(function)

        @functools.wraps(function)
        def stored(result: Result, data: CIFAR10, *args, **kwargs):
            bound = signature.bind(result, data, *args, **kwargs)
            bound.apply_defaults()
            params = {k: v for k, v in bound.arguments.items() if k not in ("result", "data")}
            params = json.loads(json.dumps({**params, "data": data.identity,
                                            "test_images": len(data.test_labels)}))
            return decode(_read_or_compute(name, result, params, code,
                                           lambda: function(*bound.args, **bound.kwargs)))
        return stored
    return declare


def _read_or_compute(name: str, result: Result, params: dict, code: str, compute: Callable):
    """The JSON value of the fact ``name`` (see :func:`fact`)."""
    path = fact_path(name, result, params, result.info.get("profile") or resolve_profile(None))
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
            f"The fact {name!r} of the {result.config.norm} model {result.info['key']} is "
            f"{state}: {path}, and {TRAIN_ENV}=never forbids evaluating a model. Compute it "
            f"(`python -m normlab reproduce`, or unset {TRAIN_ENV}) and commit results/.")
    value = json.loads(json.dumps(compute()))
    atomic_write_json({"fact": name, "params": params, "revision": code,
                       "result": result.info["key"], "value": value}, path)
    return value
