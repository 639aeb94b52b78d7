"""The book's machinery, beside the core: runs and their cache, the presets and parts of
the book, statistics and tables, figures, probes, and ``reproduce``.

- :mod:`~normlab.book.runs`: :func:`run` a :class:`normlab.Config` -> :class:`Result`
  (:func:`run_each` for several), cached (:mod:`~normlab.book.cache`: where results live
  and their keys);
- :mod:`~normlab.book.studies`: the presets :data:`MAIN` and :data:`STUDY`, the sweep, the
  ablations and every part of the book (:func:`book_parts`), and :func:`results` of a part;
- :mod:`~normlab.book.reproduce`: :func:`reproduce` (train, store the facts), the index;
- :mod:`~normlab.book.report`: tables and ``glue``; :mod:`~normlab.book.verdicts`: every
  "beyond the noise" as a test (scipy.stats) and a sentence; :mod:`~normlab.book.plots`: figures;
  :mod:`~normlab.book.probes`: hooks on trained models; :mod:`~normlab.book.facts`:
  what a chapter shows of a model, stored; :mod:`~normlab.book.parts`: each part's
  analysis, what its chapter shows;
- :mod:`~normlab.book.cli`: ``python -m normlab``.

The core (``normlab``) never imports this layer.
"""

from . import facts, parts, plots, probes, report, studies, verdicts
from .cache import benchmark_records
from .parts.timings import part_times, wall_times
from .reproduce import reproduce, write_index
from .parts.main import flip_accuracy
from .runs import (Mistake, Result, current_profile, load_result, machine_name,
                   misclassified, prepare_data, run, run_each)
from .studies import MAIN, STUDY, book_config, main_configs, results, study_config

__all__ = [
    "facts", "parts", "plots", "probes", "report", "studies", "verdicts", "benchmark_records",
    "part_times", "reproduce", "results", "wall_times", "write_index",
    "Mistake", "Result", "current_profile", "flip_accuracy", "load_result", "machine_name",
    "misclassified", "prepare_data", "run", "run_each",
    "MAIN", "STUDY", "book_config", "main_configs", "study_config",
]
