"""CITATION.cff, which GitHub and Zenodo read: the fields they need, and the package's
version (a citation names what was run)."""

from pathlib import Path

import yaml

import normlab

ROOT = Path(__file__).resolve().parents[1]


def test_the_citation_file_names_this_version_and_what_cff_requires():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors"} <= set(citation)
    assert citation["version"] == normlab.__version__
    assert all("name" in a or "family-names" in a for a in citation["authors"])
    assert "Normalization" in citation["title"]
