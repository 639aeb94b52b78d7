"""Command line: ``python -m normlab train | compare | reproduce | data | rf | summary``.

Examples::

    python -m normlab train --norm group --epochs 20
    python -m normlab compare                  # batch, layer and group, the book's recipe
    python -m normlab reproduce                # what the book shows, written to results/
    python -m normlab data --download          # get CIFAR-10, print its identity
    python -m normlab rf --norm batch          # receptive-field table
    python -m normlab summary --norm layer     # torchinfo summary

Data comes from ``--data`` or ``$NORMLAB_DATA`` (see :func:`normlab.data.load_data`).
"""

from __future__ import annotations

import argparse
import inspect
import re
import time
from dataclasses import fields, replace

import pandas as pd

from ..data import load_data, resolve_data_root
from ..model import Net
from ..norms import DEFAULT_GROUPS, NORM_NAMES
from ..receptive_field import receptive_field
from ..train import Config, choose_device
from .report import accuracy_table
from .reproduce import found, reproduce
from .runs import PROFILES, prepare_data, run
from .studies import BOOK_NORMS, BOOK_SEEDS, book_config

#: The recipe's fields that a command changes (the norm is each command's own).
RECIPE_FIELDS = {f.name for f in fields(Config)} - {"norm"}
#: What each part of the book trains, for ``reproduce --help``.
PART_HELP = {
    "main": "the book's models, once per seed", "precision": "batch norm in fp32 and bf16",
    "ablations": "the ablation studies", "batchsizes": "the batch-size sweep",
    "lr": "the learning-rate study", "budget": "the training-budget study",
    "smallbatch": "the small-batch repairs", "smoothness": "the smoothness probes",
    "shift": "the main models tested under distribution shift"}


def recipe_help() -> dict[str, str]:
    """Each :class:`normlab.Config` field's comment in its source (``epochs: int = 20  #
    passes over the training split``), by field name: the command line's help text."""
    source = inspect.getsource(Config)
    return dict(re.findall(r"^ +(\w+): [^=\n]+=[^#\n]+#\s*(.+)$", source, re.MULTILINE))


def _int_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def add_recipe_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per field of :class:`normlab.Config` (but ``exclude``), made from the
    dataclass: ``--batch-size`` for ``batch_size``, its help from the field's comment and its
    default from ``Config()``; ``--residual/--no-residual`` for a bool, N numbers for a
    tuple, ``none`` for a field that may be None. A flag not given sets nothing (the
    preset's value stands); the values are checked by ``Config`` itself."""
    defaults, helps = Config(), recipe_help()
    for field in fields(Config):
        if field.name in exclude:
            continue
        default = getattr(defaults, field.name)
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        options = {"help": f"{helps[field.name]} (default {shown})", "default": argparse.SUPPRESS}
        if isinstance(default, bool):
            options["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            options.update(type=int, nargs=len(default), metavar="N")
        else:
            options["type"] = _int_or_none if default is None else type(default)
        parser.add_argument("--" + field.name.replace("_", "-"), **options)


def _add_run_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The recipe's flags (:func:`add_recipe_arguments`) and where to run."""
    add_recipe_arguments(parser, exclude)
    parser.add_argument("--data", help="CIFAR-10 folder (default $NORMLAB_DATA)")
    parser.add_argument("--download", action="store_true", default=None,
                        help="download the canonical CIFAR-10 archive if it is missing")
    parser.add_argument("--device", help="auto, cpu, cuda, mps (default auto)")
    parser.add_argument("--profile", choices=tuple(PROFILES),
                        help="full (default, or $NORMLAB_PROFILE) or smoke")
    parser.add_argument("--retrain", action="store_true", help="ignore cached results")


def get_args_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m normlab`` (reusable, as torchvision's is)."""
    parser = argparse.ArgumentParser(prog="python -m normlab", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    norm_help = f"normalization: {', '.join(NORM_NAMES)}"
    train = commands.add_parser("train", help="train one model, print its epochs")
    _add_run_arguments(train)
    compare = commands.add_parser("compare", help="train batch, layer and group norm models, "
                                                  "compare them")
    _add_run_arguments(compare, exclude=("norm", "seed"))
    compare.add_argument("--seeds", type=int, nargs="+", default=[0],
                         help="train each model once per seed")
    repro = commands.add_parser("reproduce", help="train every model the book shows "
                                                  "(into results/); the recipe's flags change "
                                                  "the main models")
    _add_run_arguments(repro, exclude=("norm", "seed"))
    repro.add_argument("--seeds", type=int, nargs="+", default=list(BOOK_SEEDS),
                       help="seeds of the main models")
    repro.add_argument("--workers", type=int, help="runs trained at once in local worker "
                       "processes (default: one per CPU core, or per GPU)")
    repro.add_argument("--threads", type=int, default=1, help="threads of each run")
    repro.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run on the Ray cluster at ADDRESS (no address: start one "
                            "here); needs pip install 'normlab[ray]'")
    repro.add_argument("--gpus-per-run", type=float, default=0.0,
                       help="with --ray: the fraction of a GPU each run takes")
    repro.add_argument("--parts", nargs="+", choices=tuple(PART_HELP), default=list(PART_HELP),
                       help="; ".join(f"{part}: {text}" for part, text in PART_HELP.items()))
    for name, text in (("rf", "print the receptive-field table"),
                       ("summary", "print the torchinfo summary")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--norm", default="batch", help=norm_help)
        sub.add_argument("--groups", type=int, default=DEFAULT_GROUPS, help="groups of group norm")
    data = commands.add_parser("data", help="load CIFAR-10 (downloading it with --download), "
                                            "print its sizes and content identity")
    data.add_argument("--data", help="CIFAR-10 folder (default $NORMLAB_DATA)")
    data.add_argument("--download", action="store_true",
                      help="download the canonical CIFAR-10 archive if it is missing")
    # a flag is spelt out: an abbreviation could stand for another one (--seed for --seeds)
    for command in (parser, *commands.choices.values()):
        command.allow_abbrev = False
    return parser


def config_from_args(args: argparse.Namespace, norm: str, **fixed) -> Config:
    """The book's config for ``norm`` with the recipe fields given on the command line (and
    ``fixed``, which take precedence)."""
    changes = {k: v for k, v in vars(args).items() if k in RECIPE_FIELDS}
    config = book_config(norm, profile=args.profile, **{**changes, **fixed})
    # a precision named on the command line is trained as named, in every profile
    return replace(config, precision=args.precision) if "precision" in changes else config


def _settings(args: argparse.Namespace) -> dict:
    """Where to run, from the command line: the data (downloaded only when asked), the
    device, and whether to ignore cached results."""
    return {"root": args.data, "download": bool(args.download), "device": args.device or "auto",
            "retrain": args.retrain}


def _run(args: argparse.Namespace, config: Config):
    settings = _settings(args)
    data = prepare_data(config, settings.pop("root"), settings.pop("download"))
    return run(config, data, profile=args.profile, exact_precision="precision" in vars(args),
               **settings)


def main(argv: list[str] | None = None) -> None:
    """Run the command line. A recipe or device that cannot be is a usage error (exit status
    2); other bad input, a missing file or folder, a full disk or a ``train`` that diverged
    ends it with ``error: <what to do>`` (exit status 1)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.command in ("train", "compare", "reproduce"):
        try:   # a recipe or a device that cannot be is a usage error, before any data loads
            config_from_args(args, vars(args).get("norm", "batch"))
            choose_device(args.device or "auto")
        except ValueError as error:
            parser.error(str(error))
    try:
        _dispatch(args)
    except (ValueError, OSError) as error:   # OSError: a missing file, a full disk, no folder
        what = error
        if isinstance(error, OSError) and error.strerror:   # errno's text, with its file
            what = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
        raise SystemExit(f"error: {what}") from error


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "data":
        data = load_data(args.data, args.download)
        print(f"CIFAR-10 at {resolve_data_root(args.data)}: {len(data.train_labels):,} training "
              f"and {len(data.test_labels):,} test images; identity {data.identity}")
    elif args.command == "rf":
        print(receptive_field(Net(args.norm, groups=args.groups)).to_string(index=False))
    elif args.command == "summary":
        import torchinfo

        print(torchinfo.summary(Net(args.norm, groups=args.groups), input_size=(1, 3, 32, 32),
                                col_names=("output_size", "num_params"), row_settings=("var_names",),
                                depth=4, verbose=0))
    elif args.command == "train":
        result = _run(args, config_from_args(args, vars(args).get("norm", "batch")))
        print(pd.DataFrame(result.history.rows()).round(4).to_string(index=False))
        if result.diverged:
            where = result.info["diverged"]
            raise SystemExit(f"error: the run diverged: its loss became NaN or infinite at "
                             f"epoch {where['epoch']}, step {where['step']} (learning rate "
                             f"{where['lr']:.4g}); lower --lr. The result is saved as "
                             f"diverged.")
        print(f"\nfinal: train accuracy {result.train_accuracy:.2%}, "
              f"test accuracy {result.test_accuracy:.2%}, {result.seconds:.0f} s")
    elif args.command == "compare":
        runs = [_run(args, config_from_args(args, norm, seed=seed))
                for seed in args.seeds for norm in BOOK_NORMS]
        print(accuracy_table(runs).to_string(index=False))
    else:
        _reproduce(args)


def _reproduce(args: argparse.Namespace) -> None:
    """Train the parts of the book that ``args.parts`` names, in parallel, printing what
    each part trained, found and failed and its table, then the wall time. The recipe
    flags (``--epochs``, ``--lr`` ...) change the main models only."""
    start = time.perf_counter()
    changes = {k: v for k, v in vars(args).items() if k in RECIPE_FIELDS}
    sweep = {"workers": args.workers, "threads": args.threads, "ray_address": args.ray,
             "gpus_per_run": args.gpus_per_run, "device": args.device or "auto",
             "retrain": args.retrain}
    failed = 0
    for part, summary in reproduce(args.parts, args.profile, seeds=tuple(args.seeds),
                                   main=changes, root=args.data, download=bool(args.download),
                                   **sweep):
        table = accuracy_table(found(summary.configs, args.profile, root=args.data,
                                     download=bool(args.download)))
        print(f"\n{part}: {summary}\n{table.to_string(index=False)}", flush=True)
        failed += len(summary.failed)
    print(f"\nreproduce: {(time.perf_counter() - start) / 60:.1f} minutes in all")
    if failed:
        raise SystemExit(f"error: {failed} runs failed (listed above); the others are saved.")
