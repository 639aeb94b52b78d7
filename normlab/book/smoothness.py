"""Smoothness of the loss along the training path (Santurkar et al. 2018, Sec. 3.1 and
Figure 4), measured on this book's network.

Every ``every`` steps of a training run, :class:`SmoothnessProbe` looks along the gradient
``g`` of the current batch: at the points ``theta - m * eta * g`` for each multiplier ``m``
of :data:`MULTIPLIERS` it computes the batch's loss and gradient, in fp32 whatever the
run's precision (bf16 would round away most of these small moves), and records

- ``loss_range``: the largest minus the smallest of those losses (nats): how much the loss
  varies over the distances a step might travel ("variation of the loss");
- ``gradient_change``: the largest distance between the gradient there and at ``theta``
  ("gradient predictiveness": small when the gradient stays a good guide);
- ``beta``: the largest ratio of that distance to the distance travelled, an estimate of
  the gradient's local Lipschitz constant ("effective beta-smoothness").

``eta`` is the run's peak learning rate (``Config.lr``), the same at every probe: the
paper trained with a constant rate and probed at multiples of it, whereas the rate of a
OneCycle step varies a thousandfold over the run, and probing at multiples of it would
draw the schedule rather than the landscape. The probe restores the weights and buffers it
moved, so the run trains exactly as without it. :func:`smoothness` caches each run's
probes as JSON beside the results.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pandas as pd
import torch
from torch import nn

from ..data import CIFAR10
from ..store import atomic_write_json
from ..train import Config, Pipeline, fit
from .cache import cache_key, results_dir
from .runs import prepare_data, resolve_profile, train_mode

#: Step multipliers of the probe: the points ``theta - m * eta * g`` it looks at.
MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


class SmoothnessProbe:
    """An ``on_step`` probe for :func:`normlab.fit` (see the module docstring), every
    ``every`` steps at distances ``m * eta * |g|``; ``rows`` collects one dict per probed
    step: ``step``, ``lr`` (the step's learning rate), ``loss_range``, ``gradient_change``
    and ``beta``."""

    def __init__(self, every: int, eta: float, multipliers: tuple[float, ...] = MULTIPLIERS):
        self.every, self.eta, self.multipliers, self.rows = every, eta, multipliers, []

    def __call__(self, step: int, model: nn.Module, batch_loss, lr: float) -> None:
        if step % self.every:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            g = torch.autograd.grad(batch_loss(), params)
            g_norm = math.sqrt(sum(float(x.float().square().sum()) for x in g))
            losses, changes, betas = [], [], []
            for m in self.multipliers:
                with torch.no_grad():
                    for p, gi in zip(params, g):
                        p.sub_(m * self.eta * gi)
                loss = batch_loss()
                g_here = torch.autograd.grad(loss, params)
                change = math.sqrt(sum(float((a.float() - b.float()).square().sum())
                                       for a, b in zip(g_here, g)))
                losses.append(loss.item())
                changes.append(change)
                betas.append(change / max(m * self.eta * g_norm, 1e-12))
                model.load_state_dict(saved)
        finally:
            model.load_state_dict(saved)
        self.rows.append({"step": step, "lr": lr, "loss_range": max(losses) - min(losses),
                          "gradient_change": max(changes), "beta": max(betas)})


#: Probes per training run, spread evenly over its steps.
PROBES = 50


def probes_path(config: Config, data: CIFAR10, profile: str, every: int | None = None):
    """Where the probes of ``config`` on ``data`` every ``every`` steps (default
    :func:`probe_interval`) are cached: ``results_dir()/<profile>/smoothness-<norm>-<key>-every<n>.json``."""
    every = every or probe_interval(config, data)
    return (results_dir() / profile /
            f"smoothness-{config.norm}-{cache_key(config, data, profile)}-every{every}.json")


def probe_interval(config: Config, data: CIFAR10) -> int:
    """Steps between two probes: :data:`PROBES` probes over the run, at least one step
    apart."""
    steps = config.epochs * -(-len(data.train_labels) // config.batch_size)
    return max(1, steps // PROBES)


def smoothness_found(config: Config, data: CIFAR10, profile: str,
                     every: int | None = None) -> bool:
    """Whether the probes of ``config`` on ``data`` are in the results folder."""
    return probes_path(config, data, profile, every).exists()


def smoothness(config: Config, data: CIFAR10 | None = None, every: int | None = None,
               profile: str | None = None, retrain: bool = False) -> pd.DataFrame:
    """The probes of a run of ``config`` (:class:`SmoothnessProbe` every ``every`` steps,
    default :func:`probe_interval`), from
    ``results_dir()/<profile>/smoothness-<norm>-<key>-every<n>.json`` or, if missing (or
    with ``retrain``), by training it here and saving them there, atomically. Columns
    ``step``, ``lr``, ``loss_range``, ``gradient_change``, ``beta``.

    Raises:
        FileNotFoundError: missing, and ``$NORMLAB_TRAIN`` is ``never``.
    """
    profile = resolve_profile(profile)
    data = data if data is not None else prepare_data(config)
    every = every or probe_interval(config, data)
    path = probes_path(config, data, profile, every)
    if path.exists() and not retrain:
        return pd.DataFrame(json.loads(path.read_text())["probes"])
    if train_mode() == "never":
        raise FileNotFoundError(f"No smoothness probes {path} for {config}, and "
                                f"NORMLAB_TRAIN=never forbids training them: run `python -m "
                                f"normlab reproduce --parts smoothness` and commit results/.")
    probe = SmoothnessProbe(every, config.lr)
    fit(config.build_model(), data, config, Pipeline.for_config(config, data), progress=False,
        on_step=probe)
    atomic_write_json({"config": json.loads(json.dumps(asdict(config))), "every": every,
                       "data": data.identity, "probes": probe.rows}, path)
    return pd.DataFrame(probe.rows)
