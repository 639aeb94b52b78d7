"""The book's sources: chapters committed without outputs, results matching the code."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

import normlab
from normlab.experiment import cache_key, load_result, result_paths
from normlab.studies import book_parts

ROOT = Path(__file__).resolve().parents[1]
# Read before the autouse fixture clears them: the committed results are keyed by the data
# and the precision they were trained in (the deploy workflow sets both).
DATA = os.environ.get("NORMLAB_DATA")
PRECISION = os.environ.get("NORMLAB_PRECISION", "auto")
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapters_are_committed_without_outputs(chapter):
    cells = json.loads(chapter.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells)
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{chapter.name}: cells {dirty} have outputs; clear them before committing"


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    assert all(f"book/{c.stem}" in toc for c in CHAPTERS)


@pytest.mark.skipif(not DATA, reason="NORMLAB_DATA is not set: the committed results are "
                                     "keyed by the data they were trained on")
@pytest.mark.parametrize("norm", ["batch", "layer", "group"])
def test_committed_results_match_the_book_configuration(norm, monkeypatch):
    monkeypatch.setenv("NORMLAB_RESULTS", str(ROOT / "results"))
    config = normlab.book_config(norm, profile="full", data=DATA, precision=PRECISION)
    data = normlab.prepare_data(config)
    record_path, _ = result_paths(config, cache_key(config, data))
    assert load_result(config, data) is not None, (
        f"No committed result {record_path.name} for the book's {norm} configuration: run "
        f"`python -m normlab reproduce` and commit results/full/.")
    record = json.loads(record_path.read_text())
    assert record["epochs"] == config.epochs <= 20 and record["test_accuracy"] > 0.70


@pytest.mark.skipif(not DATA, reason="NORMLAB_DATA is not set")
def test_committed_results_cover_every_part_of_the_book(monkeypatch):
    monkeypatch.setenv("NORMLAB_RESULTS", str(ROOT / "results"))
    monkeypatch.setenv("NORMLAB_PRECISION", PRECISION)
    data = {}
    missing = []
    for part, configs in book_parts("full").items():
        for config in configs:
            config = replace(config, data=DATA)
            key = (config.train_subset, config.test_subset)
            if key not in data:
                data[key] = normlab.prepare_data(config)
            if load_result(config, data[key]) is None:
                missing.append(f"{part}: {config}")
    assert not missing, ("Not committed (run `python -m normlab reproduce` and commit "
                         "results/full/):\n" + "\n".join(missing))
