"""The book's text is the same on every machine: what every chapter quotes and tabulates,
computed from the committed results and facts with training and evaluation forbidden, is
equal with and without ONEDNN_MAX_CPU_ISA=AVX2 (a CPU that emulates bf16)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlab import native_precision

from conftest import OUTER_CACHE

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("NORMLAB_DATA")

#: Every chapter's values and tables (each norm's chapter glues its own), as JSON.
SCRIPT = """
import json
from normlab.book import parts
from normlab.book.parts import ablations, answer, batchsizes, intro, main, shift, timings, why

chapters = {"intro": intro.chapter, "comparison": main.comparison, "activations": main.activations,
            "batchsize": batchsizes.chapter, "ablations": ablations.chapter, "why": why.chapter,
            "shift": shift.chapter, "answer": answer.chapter, "reproduce": timings.chapter}
text = {}
for name, chapter in chapters.items():
    shown = chapter()
    text[name] = {"values": shown.values,
                  "tables": {k: getattr(t, "data", t).to_string() for k, t in shown.tables.items()}}
glued = {}
main.glue = lambda name, value, display=False: glued.__setitem__(name, value)
for norm in ("batch", "layer", "group"):
    main.norm_chapter(norm)
    text[norm] = dict(glued)
print(json.dumps(text))
"""


def book_text(**env) -> dict:
    """The text of the full book from the committed results (a fresh process)."""
    settings = {**os.environ, "NORMLAB_DATA": DATA, "NORMLAB_RESULTS": str(ROOT / "results"),
                "NORMLAB_PROFILE": "full", "NORMLAB_TRAIN": "never", **env}
    if OUTER_CACHE:
        settings["NORMLAB_CACHE"] = OUTER_CACHE
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=settings, capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not DATA, reason="NORMLAB_DATA is not set: the committed results are "
                                     "keyed by the data they were trained on")
@pytest.mark.skipif(native_precision(torch.device("cpu")) != "bf16",
                    reason="this CPU emulates bf16 already: there is no other kind to compare with")
def test_the_book_reads_the_same_where_bf16_is_emulated():
    native, emulated = book_text(), book_text(ONEDNN_MAX_CPU_ISA="AVX2")
    assert native.keys() == emulated.keys()
    for chapter in native:
        assert native[chapter] == emulated[chapter], chapter
    assert "±" in native["intro"]["values"]["batch_test"]       # real numbers, not empty
