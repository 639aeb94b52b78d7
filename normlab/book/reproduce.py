"""Every part of the book trained or found, and its facts stored: :func:`reproduce`, and
the index of what ``results/`` holds (:func:`write_index`)."""

from __future__ import annotations

import csv
import datetime
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, fields

import pandas as pd

from ..store import atomic_write_json, atomic_write_text
from ..train import Config, Pipeline
from .cache import result_paths, results_dir
from .parts import FACTS
from .runs import Result, data_for, load_result, resolve_profile, run
from .parts.shift import shift_found, shift_path, shift_table
from .smoothness import probes_path, smoothness, smoothness_found
from .parts.timings import WALL_TIMES_NAME
from .studies import BOOK_SEEDS, MAIN, STUDY, book_data, book_parts
from .workers import Summary, WorkerPool, default_workers, run_many

INDEX_NAME = "index.csv"


def _changes(config: Config) -> tuple[str, str]:
    """The fields in which ``config`` differs from the preset it is closest to
    (:data:`MAIN` or :data:`STUDY`, norm and seed left out): the preset's name and
    ``field=value`` pairs."""
    def differences(preset: Config) -> dict:
        theirs = asdict(preset)
        return {f.name: v for f in fields(config) if f.name not in ("norm", "seed")
                and (v := getattr(config, f.name)) != theirs[f.name]}

    preset, changed = min(((name, differences(p)) for name, p in (("main", MAIN),
                                                                   ("study", STUDY))),
                          key=lambda item: len(item[1]))
    return preset, " ".join(f"{k}={v}" for k, v in changed.items())


def write_index(profile: str | None = None, *, root=None, download: bool = True) -> pd.DataFrame:
    """Write ``results/<profile>/index.csv``: one row per result of the book found in the
    results folder (nothing is trained) with its part, norm, seed, preset, the fields that differ
    from that preset, test accuracy (percent) and the name of the file that holds the part's
    numbers (:func:`result_file`). Returns the table."""
    profile = resolve_profile(profile)
    rows, data = [], book_data(profile, root, download)
    for part, configs in book_parts(profile).items():
        for r in found(configs, profile, data=data):
            subset = data[(r.config.train_subset, r.config.test_subset)]
            path = result_file(part, r, subset, profile)
            if not path.exists():
                continue
            file = path.name
            preset, changes = _changes(r.config)
            rows.append({"part": part, "norm": r.config.norm, "seed": r.config.seed,
                         "preset": preset, "changes": changes,
                         "test accuracy (%)": round(100 * r.test_accuracy, 2), "file": file})
    table = pd.DataFrame(rows)
    text = io.StringIO()
    table.to_csv(text, index=False, quoting=csv.QUOTE_MINIMAL)
    atomic_write_text(text.getvalue(), results_dir() / profile / INDEX_NAME)
    return table


def result_file(part: str, result: Result, data, profile: str):
    """The file that holds ``result``'s numbers for ``part``: the probes' file for
    ``smoothness`` (the probed run trains the same weights as the plain one), the
    accuracies under shift for ``shift``, else the model's record."""
    if part == "smoothness":
        return probes_path(result.config, data, profile)
    if part == "shift":
        return shift_path(result, profile)
    return result_paths(result.config, result.info["key"], profile)[0]


def reproduce(parts: list[str] | None = None, profile: str | None = None, *,
              seeds: tuple[int, ...] = BOOK_SEEDS, main: dict | None = None,
              root=None, download: bool = True, **sweep):
    """Train (or find) ``parts`` of the book (default: all), part by part, each part's runs
    in parallel (:func:`normlab.book.workers.run_many`, with ``sweep``'s settings; local
    worker processes serve every part, a :class:`normlab.book.workers.WorkerPool`); yield
    ``(part, summary)`` as each part finishes, then rewrite the index
    (:func:`write_index`). Stopped early, it stops its workers when closed (``close()``,
    or when the generator is collected).
    ``main`` changes fields of the main models (``--epochs`` on the command line), also
    where ``shift`` tests them."""
    profile = resolve_profile(profile)
    configs = book_parts(profile, seeds, main)
    with WorkerPool(sweep.get("workers") or default_workers()) as pool:
        for part in parts or configs:
            if part in _IN_THIS_PROCESS:
                summary = _one_by_one(configs[part], profile, root, download,
                                      sweep.get("retrain", False), *_IN_THIS_PROCESS[part])
            else:
                summary = run_many(configs[part], profile, root=root, download=download,
                                   pool=pool, **sweep)
            if summary.trained:
                _record_wall_time(profile, part, summary)
            if part in FACTS:
                _store_facts(part, configs[part], profile, root, download, summary)
            yield part, summary
    write_index(profile, root=root, download=download)


def _store_facts(part: str, configs: list[Config], profile: str, root, download: bool,
                 summary: Summary) -> None:
    """Compute and store the facts of ``part`` (:data:`normlab.book.parts.FACTS`) from the
    results of ``configs`` that are there, each on the data it was trained on; where that
    fails, the error is added to ``summary`` as a failure of the part's first config."""
    data = data_for(configs, root, download)
    try:
        FACTS[part](found(configs, profile, data=data), data)
    except Exception as error:   # reported, and the other parts go on
        summary.failed.append((configs[0], f"its facts: {type(error).__name__}: "
                                           f"{error}".splitlines()[0]))


def _shift_of(config: Config, data, profile: str, retrain: bool) -> None:
    """The shift table of ``config``'s model (:func:`normlab.book.parts.shift.shift_table`), with
    ``retrain`` computed again (the model is the main part's, trained where missing)."""
    shift_table([run(config, data, profile=profile, exact_precision=True)], data.test_images,
                data.test_labels, Pipeline.for_config(config, data), profile, retrain=retrain)


#: The parts made in this process, one run after another, not by :func:`run_many`: what
#: tells whether a run's output is there (``(config, data, profile)``), and what makes it
#: (``(config, data, profile, retrain)``).
_IN_THIS_PROCESS = {
    "smoothness": (smoothness_found,
                   lambda c, d, p, retrain: smoothness(c, d, profile=p, retrain=retrain)),
    "shift": (lambda c, d, p: (r := load_result(c, d, p)) is not None and shift_found(r, p),
              _shift_of),
}


def _one_by_one(configs: list[Config], profile: str, root, download: bool, retrain: bool,
                found_: Callable, make: Callable) -> Summary:
    """Make what ``configs`` need (``make``, where ``found_`` says it is missing, or all
    with ``retrain``), one after another in this process: the smoothness probes and the
    shift tables. A run that fails is reported in the summary, as
    :func:`normlab.book.workers.run_many` does, and the others go on."""
    start = time.perf_counter()
    summary = Summary(configs, "this process, one run at a time")
    data = data_for(configs, root, download)
    for config in configs:
        subset = data[(config.train_subset, config.test_subset)]
        if not retrain and found_(config, subset, profile):
            summary.found.append(config)
            continue
        try:
            make(config, subset, profile, retrain)
        except Exception as error:   # reported, and the part goes on
            summary.failed.append((config, f"{type(error).__name__}: {error}".splitlines()[0]))
        else:
            summary.trained.append(config)
    summary.seconds = time.perf_counter() - start
    return summary


def _record_wall_time(profile: str, part: str, summary) -> None:
    """Record the wall time of ``part``. A call that resumed the part (it found every run
    that the recorded calls trained or found) adds its time to theirs: the record covers
    every call that trained the part's results, across interrupted sessions."""
    path = results_dir() / profile / WALL_TIMES_NAME
    times = json.loads(path.read_text()) if path.exists() else {}
    before = times.get(part)
    resumed = before and before["trained"] + before["found"] <= len(summary.found)
    earlier = (before["minutes"], before["trained"], before.get("calls", 1)) if resumed else (0, 0, 0)
    times[part] = {"minutes": round(earlier[0] + summary.seconds / 60, 1),
                   "trained": earlier[1] + len(summary.trained),
                   "found": len(summary.found) - earlier[1], "calls": earlier[2] + 1,
                   "where": summary.where, "date": datetime.date.today().isoformat()}
    atomic_write_json(times, path)


def found(configs: list[Config], profile: str | None = None, *, root=None,
          download: bool = True, data: dict | None = None) -> list[Result]:
    """The results of ``configs`` that are in the results folder, each once (nothing is
    trained); ``data`` as in :func:`results`."""
    profile = resolve_profile(profile)
    data = data or data_for(configs, root, download)
    results_ = [load_result(c, data[(c.train_subset, c.test_subset)], profile)
                for c in dict.fromkeys(configs)]
    return [r for r in results_ if r is not None]
