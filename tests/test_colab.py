"""A chapter run the way Colab runs it: a fresh environment with only torch, torchvision
and matplotlib (and the Jupyter kernel), where the chapter's first cell clones the
repository, installs normlab from it and points it at the clone's committed results.

The install cell names the repository of ``_config.yml``; here it clones the local
checkout's committed state instead. The fresh virtual environment sees only the Colab
packages and what they require, linked from the environment running the tests (a second
copy of torch's CUDA build would need several GB of disk). Needs ``$NORMLAB_DATA`` (there
is no download here) holding the data the committed results were trained on: the chapter
runs in the full profile with training forbidden, so it shows the book's numbers.
"""

import os
import subprocess
import sysconfig
import venv
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("NORMLAB_DATA")  # read before the autouse fixture clears it
COLAB_PACKAGES = ["torch", "torchvision", "matplotlib", "ipykernel"]
CHAPTER = ROOT / "book" / "batchnorm.ipynb"


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def test_every_install_cell_clones_the_configured_repository():
    cells = {chapter.name: nbformat.read(chapter, as_version=4).cells[0]
             for chapter in sorted((ROOT / "book").glob("*.ipynb"))}
    for name, first in cells.items():
        assert "remove-cell" in first.metadata.get("tags", []), name
        assert f"git clone --quiet --depth 1 {repository_url()} " in first.source, (
            f"{name}: the install cell must clone {repository_url()}")
    assert len({first.source for first in cells.values()}) == 1, "one install cell for all"


def requirement_closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``names`` need, following their requirements and the
    extras those ask for (torch needs ``cuda-toolkit[cublas,...]``)."""
    found, done, todo = {}, defaultdict(set), [Requirement(name) for name in names]
    while todo:
        wanted = todo.pop()
        name = canonicalize_name(wanted.name)
        found.setdefault(name, metadata.distribution(name))
        for extra in ({""} | wanted.extras) - done[name]:
            done[name].add(extra)
            for line in found[name].requires or []:
                requirement = Requirement(line)
                marker = requirement.marker
                if marker.evaluate({"extra": extra}) if marker else extra == "":
                    todo.append(requirement)
    return found


def link_distributions(distributions, folder: Path) -> None:
    """Symlink the top-level files and folders of each distribution into ``folder``."""
    site = Path(sysconfig.get_paths()["purelib"])
    folder.mkdir(exist_ok=True)
    for distribution in distributions:
        for top in {Path(f).parts[0] for f in distribution.files or [] if Path(f).parts[0] != ".."}:
            target = Path(distribution.locate_file(top))
            if target.exists() and target.is_relative_to(site) and not (folder / top).exists():
                (folder / top).symlink_to(target)


@pytest.fixture(scope="module")
def colab_python(tmp_path_factory) -> Path:
    """A fresh virtual environment that sees only what Colab has; returns its python."""
    folder = tmp_path_factory.mktemp("colab")
    venv.create(folder / "venv", with_pip=True)
    link_distributions(requirement_closure(COLAB_PACKAGES).values(), folder / "packages")
    python = folder / "venv" / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([python, "-c", purelib], capture_output=True, text=True,
                          check=True).stdout.strip()
    (Path(site) / "colab.pth").write_text(f"{folder / 'packages'}\n")
    return python


def committed_for(data_root: str) -> bool:
    """Whether results/ holds the book's batch-norm model for the data at ``data_root``."""
    from normlab.book import book_config, load_result, prepare_data

    config = book_config("batch", "full")
    return load_result(config, prepare_data(config, data_root), "full") is not None


@pytest.mark.skipif(not DATA, reason="NORMLAB_DATA is not set (nothing can be downloaded)")
def test_chapter_runs_in_a_fresh_colab_like_environment(colab_python, tmp_path, monkeypatch,
                                                       outer_cache):
    # the data decoded once for the tests (outer_cache): a first decode is tested in test_data
    monkeypatch.setenv("NORMLAB_RESULTS", str(ROOT / "results"))
    if not committed_for(DATA):
        pytest.skip(f"the committed results were trained on other data than {DATA}")
    monkeypatch.delenv("NORMLAB_RESULTS")
    def python(code):  # outside the checkout, so that the local normlab/ is not imported
        return subprocess.run([colab_python, "-c", code], capture_output=True, text=True,
                              check=False, cwd=tmp_path)

    assert "No module named 'normlab'" in python("import normlab").stderr

    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        f'{{"argv": ["{colab_python}", "-m", "ipykernel_launcher", "-f", "{{connection_file}}"],'
        f' "display_name": "colab", "language": "python"}}')
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("NORMLAB_DATA", DATA)
    monkeypatch.setenv("NORMLAB_TRAIN", "never")   # the committed results, or an error

    notebook = nbformat.read(CHAPTER, as_version=4)
    install = notebook.cells[0]
    install.source = install.source.replace(repository_url(), ROOT.as_uri())
    NotebookClient(notebook, kernel_name="colab", timeout=600,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    installed = python("import normlab; print(normlab.__file__)").stdout
    assert "site-packages" in installed, "normlab must come from the install cell"
    figures = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
               if "image/png" in o.get("data", {})]
    assert figures, "the chapter draws its figures"
    history = next(o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                   if "text/html" in o.get("data", {}) and "test_accuracy" in o["data"]["text/html"])
    assert "<th>20</th>" in history["data"]["text/html"], "the committed 20-epoch model"
