"""Every model the book shows, as :class:`normlab.Config` presets and lists of them.

- :data:`MAIN`: the book's recipe (``Config()``); :data:`STUDY`: the cheaper setting of
  the studies, derived from it in one line (10,000 training images, 10 epochs, nothing
  else changed), so that each study fits in minutes per model on a 2-core CPU.
  :func:`book_config` and :func:`study_config` size a preset for a profile.
- :func:`batch_size_sweep`: every norm of :data:`SWEEP_NORMS` at every batch size of
  :data:`SWEEP_BATCH_SIZES`, the learning rate scaled linearly with the batch size
  (:func:`scaled_lr`); the CIFAR-scale version of Wu & He 2018, Figure 1.
- :func:`ablations`: one change at a time to the model and to the recipe.
- :func:`lr_tolerance`, :func:`budgets`, :func:`small_batch_repairs`: why normalization
  helps (learning rates, training budgets, small batches repaired).
- :func:`book_parts`: everything the book shows, by part (what ``python -m normlab
  reproduce`` trains).
"""

from __future__ import annotations

from dataclasses import replace

from ..train import Config
from .runs import Result, data_for, resolve_profile, run_each

#: The book's recipe.
MAIN = Config()
#: The studies' setting: the recipe on a training subset, for fewer epochs.
STUDY = replace(MAIN, epochs=10, train_subset=10_000)
#: The smoke profile (CI, nbval): every run takes one epoch of :data:`SMOKE_STEPS` optimizer
#: steps (OneCycle needs more than 4 at ``pct_start=0.25``) of its own batch size, and is
#: tested on :data:`SMOKE_TEST_IMAGES` images, in the precision the machine computes
#: natively (:func:`smoke_config`).
SMOKE_STEPS = 5
SMOKE_TEST_IMAGES = 200

#: The main models of the book, and the seeds each is trained with.
BOOK_NORMS = ("batch", "layer", "group")
BOOK_SEEDS = (0, 1, 2, 3, 4)
#: Seeds of the studies' repeated runs (the noise of the study setting).
STUDY_SEEDS = (0, 1, 2)
#: The best test accuracy (%) of the published solutions of this assignment known to the
#: project when it set its goals (same layout, under 50,000 parameters, at most 20 epochs,
#: trained and tested on the original CIFAR-10 pixels): the figures to beat.
PUBLISHED_BEST = {"batch": 80.44, "layer": 78.1, "group": 77.59}
#: Where :data:`PUBLISHED_BEST` comes from (each the best test accuracy over the epochs of
#: one run, as its README reports it).
PUBLISHED_SOURCE = "github.com/prarthananbhat/ERA (Session_8/README.md)"
#: Precisions the batch-norm model is compared in.
PRECISIONS = ("fp32", "bf16")

SWEEP_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128)
#: Instance norm is left out: in the assignment's order (norm after the ReLU, right before
#: global average pooling) it makes every pooled feature equal to its affine shift, so the
#: network cannot see its input (the ablations show it, and the fix).
SWEEP_NORMS = ("batch", "group", "layer", "none")
#: The batch size the main recipe's learning rate (``Config.lr``) is tuned for.
REFERENCE_BATCH_SIZE = MAIN.batch_size
#: The batch size of the ablations (the sweep's largest).
ABLATION_BATCH_SIZE = 128
#: Group counts of the group-norm ablation: they must divide every width of the network
#: (16, 24, 32): 1 is layer norm; instance norm (one channel per group) is the other end.
ABLATION_GROUPS = (1, 2, 4, 8)
#: Peak learning rates of the learning-rate study: a log grid over two and a half decades
#: around the recipe's 0.1.
LR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
#: Norms of the learning-rate and smoothness studies: the book's three and none.
WHY_NORMS = ("batch", "layer", "group", "none")
#: Epochs of the budget study (each its own OneCycle schedule, on the study subset); the
#: smoke profile trains the first three.
BUDGET_EPOCHS = (1, 2, 5, 10, 20)
SMOKE_BUDGET_EPOCHS = BUDGET_EPOCHS[:3]
#: Seeds of the main models tested under distribution shift.
SHIFT_SEEDS = (0, 1, 2)
#: The small batch size repaired (the sweep's smallest).
SMALL_BATCH_SIZE = 2


def scaled_lr(batch_size: int, base_lr: float = MAIN.lr,
              reference: int = REFERENCE_BATCH_SIZE) -> float:
    """The linear scaling rule (Goyal et al. 2017, Sec. 2.1): ``base_lr * batch_size /
    reference``. Wu & He 2018 train every batch size of their Figure 1 this way."""
    return base_lr * batch_size / reference


#: The recipe ablation: one change at a time to the book's recipe, by label (overrides of
#: :func:`study_config`). The crops and the batch size re-examine the recipe's own choices;
#: the widths move channels to the first stage or to the last, within the parameter budget
#: and divisible by the default group count.
RECIPE_CHANGES = {
    "study recipe": {},
    "no label smoothing": {"label_smoothing": 0.0},
    "no weight decay": {"weight_decay": 0.0},
    "weight decay x2": {"weight_decay": 2 * MAIN.weight_decay},
    "no augmentation": {"crop_padding": 0, "flip": False},
    "zero-padded crops": {"crop_padding_mode": "constant"},
    "crop padding 4": {"crop_padding": 4},
    "batch size 256": {"batch_size": 256, "lr": scaled_lr(256)},
    "peak learning rate / 2": {"lr": scaled_lr(ABLATION_BATCH_SIZE) / 2},
    "peak learning rate x2": {"lr": scaled_lr(ABLATION_BATCH_SIZE) * 2},
    "channels early": {"widths": (32, 48, 16, 24, 24, 24)},
    "channels late": {"widths": (8, 16, 16, 20, 32, 36)},
}


def smoke_config(config: Config, **kept) -> Config:
    """``config`` as the smoke profile trains it: one epoch of :data:`SMOKE_STEPS` steps
    (``SMOKE_STEPS * batch_size`` training images), :data:`SMOKE_TEST_IMAGES` test images,
    and the precision the machine computes natively (``auto``:
    :func:`normlab.native_precision`; fp32 where the config names it). The sizes among
    ``kept`` (a study's own ``epochs``, say) stay as given. Its numbers are not results, and an
    emulated bf16 would make CI several times slower on a CPU without AVX512-BF16."""
    sizes = {"epochs": 1, "train_subset": SMOKE_STEPS * config.batch_size,
             "test_subset": SMOKE_TEST_IMAGES}
    return replace(config, **{**sizes, **{k: v for k, v in kept.items() if k in sizes}},
                   precision="fp32" if config.precision == "fp32" else "auto")


def book_config(norm: str = "batch", profile: str | None = None, preset: Config = MAIN,
                **changes) -> Config:
    """``preset`` for ``norm`` with ``changes`` to any other field, as ``profile`` (default:
    the current profile) trains it: as is in ``full``, through :func:`smoke_config` in
    ``smoke``."""
    config = replace(preset, norm=norm, **changes)
    return smoke_config(config, **changes) if resolve_profile(profile) == "smoke" else config


def study_config(norm: str, batch_size: int = ABLATION_BATCH_SIZE,
                 profile: str | None = None, **changes) -> Config:
    """:data:`STUDY` for ``norm`` at ``batch_size``, the learning rate scaled to it
    (:func:`scaled_lr`), sized by ``profile``; ``changes`` change any other field."""
    return book_config(norm, profile, STUDY, **{"batch_size": batch_size,
                                                 "lr": scaled_lr(batch_size), **changes})


def batch_size_sweep(profile: str | None = None, **overrides) -> list[Config]:
    """One config per (norm, batch size), norms outermost."""
    return [study_config(norm, batch_size, profile, **overrides)
            for norm in SWEEP_NORMS for batch_size in SWEEP_BATCH_SIZES]


def ablations(profile: str | None = None, **overrides) -> dict[str, list[Config]]:
    """The ablation studies, by name; each list includes the unchanged models.

    - ``residual``: batch, layer and group norm, with and without residual additions.
    - ``order``: batch, layer, group and instance norm, conv-ReLU-norm (the assignment's
      order) and conv-norm-ReLU.
    - ``groups``: group norm with each of :data:`ABLATION_GROUPS`, then instance norm.
    - ``recipe``: batch, layer and group norm with each of :data:`RECIPE_CHANGES`, in its
      order (changes outermost).
    - ``seeds``: batch, layer and group norm unchanged, once per seed of
      :data:`STUDY_SEEDS`: the run-to-run noise of this setting.
    """
    def config(norm, **changes):
        return study_config(norm, profile=profile, **{**overrides, **changes})

    return {
        "residual": [config(n, residual=r) for r in (True, False) for n in BOOK_NORMS],
        "order": [config(n, order=o) for o in ("conv-relu-norm", "conv-norm-relu")
                  for n in (*BOOK_NORMS, "instance")],
        "groups": [config("group", groups=g) for g in ABLATION_GROUPS] + [config("instance")],
        "recipe": [config(n, **change) for change in RECIPE_CHANGES.values() for n in BOOK_NORMS],
        "seeds": [config(n, seed=s) for s in STUDY_SEEDS for n in BOOK_NORMS],
    }


def main_configs(profile: str | None = None, seeds: tuple[int, ...] = BOOK_SEEDS,
                 **changes) -> list[Config]:
    """The book's main models, :data:`BOOK_NORMS` once per seed (seed by seed), sized by
    ``profile``; ``changes`` change any field of all of them (the evidence for a recipe
    choice is the main models with that choice undone)."""
    return [book_config(norm, profile, seed=seed, **changes)
            for seed in seeds for norm in BOOK_NORMS]


def lr_tolerance(profile: str | None = None) -> list[Config]:
    """:data:`WHY_NORMS` at every peak learning rate of :data:`LR_GRID` (norms outermost),
    in the study setting at :data:`ABLATION_BATCH_SIZE`."""
    return [study_config(norm, profile=profile, lr=lr) for norm in WHY_NORMS for lr in LR_GRID]


def budgets(profile: str | None = None) -> list[Config]:
    """:data:`BOOK_NORMS` trained for each of :data:`BUDGET_EPOCHS` epochs on the study
    subset (:data:`SMOKE_BUDGET_EPOCHS` in the smoke profile), each its own OneCycle run
    (norms outermost)."""
    epochs_grid = SMOKE_BUDGET_EPOCHS if resolve_profile(profile) == "smoke" else BUDGET_EPOCHS
    return [study_config(norm, profile=profile, epochs=epochs)
            for norm in BOOK_NORMS for epochs in epochs_grid]


def small_batch_repairs(profile: str | None = None) -> dict[str, list[Config]]:
    """The small-batch repairs at :data:`SMALL_BATCH_SIZE` and at
    :data:`ABLATION_BATCH_SIZE`, by label, once per seed of :data:`STUDY_SEEDS`: batch
    norm (whose running statistics are re-estimated after training, "precise BN", Wu &
    Johnson 2021), group norm, and group norm with weight standardization (Qiao et al. 2019).
    """
    def configs(norm, **changes):
        return [study_config(norm, b, profile, seed=seed, **changes)
                for b in (SMALL_BATCH_SIZE, ABLATION_BATCH_SIZE) for seed in STUDY_SEEDS]

    return {"batch norm": configs("batch"), "group norm": configs("group"),
            "group norm + WS": configs("group", weight_standardization=True)}


def book_parts(profile: str | None = None, seeds: tuple[int, ...] = BOOK_SEEDS,
               main: dict | None = None) -> dict[str, list[Config]]:
    """Every config the book shows, by part, in training order: ``main``
    (:func:`main_configs`), ``precision`` (batch norm, seed 0, in each of
    :data:`PRECISIONS`), ``ablations`` (:func:`ablations`, repeats included), ``batchsizes``
    (:func:`batch_size_sweep`), ``lr`` (:func:`lr_tolerance`), ``budget``
    (:func:`budgets`), ``smallbatch`` (:func:`small_batch_repairs`) and ``smoothness``
    (:data:`WHY_NORMS` in the study setting, trained again with the smoothness probe of
    :mod:`normlab.book.smoothness`; their plain runs are in ``lr``) and ``shift`` (the main
    models of :data:`SHIFT_SEEDS`, tested under :mod:`normlab.book.parts.shift`). ``main``
    changes fields of the main models, for both parts that use them."""
    main_models = main_configs(profile, seeds, **(main or {}))
    return {
        "main": main_models,
        "precision": [book_config("batch", profile, precision=p) for p in PRECISIONS],
        "ablations": [c for configs in ablations(profile).values() for c in configs],
        "batchsizes": batch_size_sweep(profile),
        "lr": lr_tolerance(profile),
        "budget": budgets(profile),
        "smallbatch": [c for configs in small_batch_repairs(profile).values() for c in configs],
        "smoothness": [study_config(norm, profile=profile) for norm in WHY_NORMS],
        "shift": [c for c in main_models if c.seed in SHIFT_SEEDS],
    }


def results(part: str, profile: str | None = None, *, seeds: tuple[int, ...] = BOOK_SEEDS,
            root=None, download: bool = True, device: str = "auto", retrain: bool = False,
            progress: bool = False, data: dict | None = None) -> list[Result]:
    """The results of one part of the book (:func:`normlab.book.studies.book_parts` with
    ``seeds``), in the part's order, repeats included; trained where not found
    (:func:`run`, on ``device``, with data from ``root``, or from ``data``, already loaded
    by subset: :func:`normlab.book.runs.data_for`).

    Raises:
        ValueError: an unknown part; the message lists the parts.
    """
    profile = resolve_profile(profile)
    parts = book_parts(profile, seeds)
    if part not in parts:
        raise ValueError(f"Unknown value {part!r} for argument part. "
                         f"Valid values are {', '.join(parts)}.")
    return run_each(parts[part], profile=profile, device=device, progress=progress,
                    retrain=retrain, root=root, download=download, data=data)


def book_data(profile: str, root=None, download: bool = True) -> dict:
    """The data of every subset the book's parts use, loaded once each."""
    return data_for([c for configs in book_parts(profile).values() for c in configs], root,
                    download)
