"""The book's sources: chapters committed without outputs and calling only the public API,
the package's two floors, results matching the code."""

import ast
import importlib
import json
import os
import pkgutil
from pathlib import Path

import pytest

import normlab
import normlab.book
from normlab.book import load_result, prepare_data, results
from normlab.book.parts import FACTS
from normlab.book.reproduce import result_file
from normlab.book.runs import data_for
from normlab.data import KNOWN_DATA
from normlab.book.cache import cache_key, result_paths
from normlab.book.studies import book_parts, book_config

ROOT = Path(__file__).resolve().parents[1]
# Read before the autouse fixture clears it: the committed results are keyed by the data
# they were trained on.
DATA = os.environ.get("NORMLAB_DATA")
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
CORE = ("data", "model", "norms", "receptive_field", "store", "train")


def _code_cells(chapter: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(chapter.read_text())["cells"]
            if c["cell_type"] == "code"]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapters_are_committed_without_outputs(chapter):
    cells = json.loads(chapter.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells)
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{chapter.name}: cells {dirty} have outputs; clear them before committing"


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    assert all(f"book/{c.stem}" in toc for c in CHAPTERS)


def _imports(module, modules: set[str]) -> set[str]:
    """The ``modules`` that ``module``'s source imports: for ``from X import Y``, the module
    ``X.Y`` where there is one, else ``X``."""
    package = module.__name__ if module.__file__.endswith("__init__.py") else module.__package__
    found = set()
    for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.add(name if name in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def test_the_core_never_imports_the_book_layer_and_imports_have_no_cycle():
    names = {"normlab"} | {m.name for m in pkgutil.walk_packages(normlab.__path__, "normlab.")}
    graph = {name: _imports(importlib.import_module(name), names) for name in names}
    for name in ("normlab", *(f"normlab.{m}" for m in CORE)):
        assert not {n for n in graph[name] if n.startswith("normlab.book")}, name

    def visit(name, path):
        assert name not in path, f"import cycle: {' -> '.join([*path, name])}"
        for child in graph[name]:
            visit(child, (*path, name))

    for name in graph:
        visit(name, ())


def _public(obj) -> set[str]:
    """The public names of ``obj``: its ``__all__`` (and, for normlab, the book layer) or,
    for a module without one, its names that do not start with an underscore."""
    if obj is normlab:
        return {*normlab.__all__, "book"}
    return set(getattr(obj, "__all__", None) or [n for n in vars(obj) if not n.startswith("_")])


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapters_use_only_public_names(chapter):
    """``nl.X``, ``book.X``, ``book.module.X`` and ``from normlab... import X`` name only
    what ``normlab.__all__``, ``normlab.book.__all__`` and the public modules there offer."""
    roots = {"nl": normlab, "book": normlab.book, "normlab": normlab}
    private = []
    for source in _code_cells(chapter)[1:]:   # the first cell installs normlab in Colab
        tree = ast.parse("\n".join(line for line in source.splitlines()
                                   if not line.lstrip().startswith(("%", "!"))))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("normlab"):
                module = importlib.import_module(node.module)
                private += [f"{node.module}.{a.name}" for a in node.names
                            if a.name not in _public(module)]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in roots and node.attr not in _public(roots[node.value.id]):
                    private.append(f"{node.value.id}.{node.attr}")
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                  and isinstance(node.value.value, ast.Name) and node.value.value.id in roots):
                owner = getattr(roots[node.value.value.id], node.value.attr, None)
                if type(owner).__name__ == "module" and node.attr not in _public(owner):
                    private.append(f"{node.value.value.id}.{node.value.attr}.{node.attr}")
    assert not private, f"{chapter.name} reaches past the public API: {sorted(set(private))}"


def test_the_per_norm_chapters_share_their_code():
    cells = {norm: _code_cells(ROOT / "book" / f"{norm}norm.ipynb")[1:]
             for norm in ("batch", "layer", "group")}
    assert cells["layer"] == [c.replace('"batch"', '"layer"') for c in cells["batch"]]
    assert cells["group"] == [c.replace('"batch"', '"group"') for c in cells["batch"]]


@pytest.mark.skipif(not DATA, reason="NORMLAB_DATA is not set: the committed results are "
                                     "keyed by the data they were trained on")
@pytest.mark.parametrize("norm", ["batch", "layer", "group"])
def test_committed_results_match_the_book_configuration(norm, monkeypatch, outer_cache):
    monkeypatch.setenv("NORMLAB_RESULTS", str(ROOT / "results"))
    config = book_config(norm, profile="full")
    data = prepare_data(config, DATA)
    record_path, _ = result_paths(config, cache_key(config, data, "full"), "full")
    assert load_result(config, data, "full") is not None, (
        f"No committed result {record_path.name} for the book's {norm} configuration: run "
        f"`python -m normlab reproduce` and commit results/full/.")
    record = json.loads(record_path.read_text())
    assert record["epochs"] == config.epochs <= 20 and record["test_accuracy"] > 0.70


@pytest.mark.skipif(not DATA, reason="NORMLAB_DATA is not set")
def test_committed_results_cover_every_part_of_the_book(monkeypatch, outer_cache):
    monkeypatch.setenv("NORMLAB_RESULTS", str(ROOT / "results"))
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    missing = []
    for part, configs in book_parts("full").items():
        try:
            found = results(part, "full", root=DATA)
        except FileNotFoundError as error:
            missing.append(f"{part}: {error}")
            continue
        # the probes and the accuracies under shift are files of their own
        data = data_for(configs, DATA, download=False)
        missing += [f"{part}: {path.name}" for r in found if not (path := result_file(
            part, r, data[(r.config.train_subset, r.config.test_subset)], "full")).exists()]
        if part in FACTS:      # what the chapters show of the models: stored, and current
            try:
                FACTS[part](found, data)
            except FileNotFoundError as error:
                missing.append(f"{part}: {error}")
    assert not missing, ("Not committed (run `python -m normlab reproduce` and commit "
                         "results/full/):\n" + "\n".join(missing))


@pytest.mark.skipif(not DATA, reason="NORMLAB_DATA is not set")
def test_the_data_is_a_copy_the_book_knows(outer_cache):
    data = normlab.load_data(DATA)
    assert data.identity in KNOWN_DATA, f"{DATA} holds unknown data ({data.identity})"
