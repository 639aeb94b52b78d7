"""Does torch.compile pay for a whole training run? ``fit`` eager against ``fit`` of
``torch.compile(model)``, each in a fresh Python process with an empty compiler cache (as
a reader's first run), on the book's recipe (batch norm) and data ($NORMLAB_DATA), with
every core of this machine.

Each process trains ``--epochs`` epochs of the full recipe and reports the wall time of
each epoch (training and the test evaluation after it: the first compiled epoch includes
the compilation of the training and the evaluation graphs). The record projects a
20-epoch run as the first epoch plus the mean of the later ones times the rest, and names
the faster. Prints one JSON line; ``--output`` also writes it to a file, which the book's
appendix reads from ``results/benchmarks/compile-*.json``.

    python benchmarks/compile_run.py [--epochs 3] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPE_EPOCHS = 20


def _child(compiled: bool, epochs: int) -> None:
    import torch

    from normlab import Config, fit, load_data

    config = Config(epochs=epochs)
    model = config.build_model()
    history = fit(torch.compile(model) if compiled else model, load_data(), config,
                  progress=False)
    print(json.dumps({"seconds_per_epoch": history.seconds, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


def measure(compiled: bool, epochs: int) -> dict:
    """Epoch times of one fresh process, with an empty compiler cache of its own."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        out = subprocess.run([sys.executable, __file__, "--child", str(int(compiled)),
                              "--epochs", str(epochs)], env=env, check=True,
                             capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def projected(seconds: list[float]) -> float:
    """Seconds of a :data:`RECIPE_EPOCHS`-epoch run: the first epoch, then the mean of the
    later ones for each of the rest."""
    later = seconds[1:] or seconds
    return seconds[0] + (RECIPE_EPOCHS - 1) * sum(later) / len(later)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement")
    parser.add_argument("--output", type=Path, help="also write the record here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch holds the compilation")
    if args.child is not None:
        _child(bool(args.child), args.epochs)
        return
    from normlab.book.runs import processor_name

    runs = {name: measure(name == "compiled", args.epochs) for name in ("eager", "compiled")}
    record = {"benchmark": "compile_run", "processor": processor_name(), "epochs": args.epochs,
              **runs, **{f"projected_{RECIPE_EPOCHS}_epochs_s": {
                  name: round(projected(r["seconds_per_epoch"]), 1) for name, r in runs.items()}}}
    times = record[f"projected_{RECIPE_EPOCHS}_epochs_s"]
    record["faster"] = min(times, key=times.get)
    line = json.dumps(record)
    print(line)
    if args.output:
        args.output.write_text(line + "\n")


if __name__ == "__main__":
    main()
