"""The smoothness probe looks along the gradient without changing the run."""

import sys

import torch

from normlab import Config, fit
from normlab.book.reproduce import reproduce
from normlab.book.smoothness import MULTIPLIERS, SmoothnessProbe, smoothness


def tiny(**changes):
    return Config(**{"epochs": 1, "batch_size": 25, "lr": 0.05, "widths": (8,) * 6, **changes})


def test_a_probed_run_trains_the_same_weights_as_an_unprobed_one(tiny_data):
    config = tiny(norm="batch")
    plain, probed = config.build_model(), config.build_model()
    fit(plain, tiny_data, config, progress=False)
    probe = SmoothnessProbe(every=3, eta=config.lr)
    fit(probed, tiny_data, config, progress=False, on_step=probe)
    for (name, a), b in zip(plain.state_dict().items(), probed.state_dict().values()):
        assert torch.equal(a, b), name                  # weights and running statistics
    assert [row["step"] for row in probe.rows] == [3, 6]       # 8 steps of 25 images
    for row in probe.rows:
        assert row["loss_range"] >= 0 and row["gradient_change"] > 0 and row["beta"] > 0


def test_beta_is_the_gradient_change_over_the_distance_travelled(tiny_data):
    # a model whose loss is quadratic in its only weight: the gradient changes linearly
    # with the step, so every multiplier gives the same ratio, the curvature
    model = torch.nn.Linear(1, 1, bias=False)
    x = torch.ones(4, 1)

    def batch_loss():
        return (3.0 * model(x).square()).mean()             # loss = 3 w^2, curvature 6

    with torch.no_grad():
        model.weight.fill_(1.0)
    probe = SmoothnessProbe(every=1, eta=0.01, multipliers=MULTIPLIERS)
    probe(1, model, batch_loss, lr=1e-5)
    assert abs(probe.rows[0]["beta"] - 6.0) < 1e-3
    assert model.weight.item() == 1.0                       # restored
    # the distances are multiples of eta, whatever the step's rate: from w = 1, the loss
    # 3 w^2 falls to 3 (1 - 6 * 4 * 0.01)^2 at the largest multiplier, 4
    assert abs(probe.rows[0]["loss_range"] - (3 * (1 - 6 * 0.0025) ** 2 - 3 * (1 - 6 * 0.04) ** 2)) < 1e-4


def test_the_probe_computes_in_fp32_in_a_bf16_run(tiny_data):
    config = tiny(norm="batch", precision="bf16")
    trained, probed = [], []

    def on_step(step, model, batch_loss, lr):
        hook = model.C1.conv.register_forward_hook(lambda m, i, out: probed.append(out.dtype))
        batch_loss()
        hook.remove()

    model = config.build_model()
    model.C1.conv.register_forward_hook(lambda m, i, out: trained.append(out.dtype))
    fit(model, tiny_data, config, progress=False, on_step=on_step)
    assert torch.bfloat16 in trained                          # the training steps
    assert set(probed) == {torch.float32}                     # the probes


def test_smoothness_is_cached(tiny_data, monkeypatch):
    config = tiny(norm="group")
    first = smoothness(config, tiny_data, every=4, profile="full")
    monkeypatch.setattr("normlab.book.smoothness.fit", None)  # found, not trained again
    again = smoothness(config, tiny_data, every=4, profile="full")
    assert first.equals(again) and list(first["step"]) == [4, 8]


def test_the_smoothness_figure_draws_both_measures_for_every_norm(tiny_data):
    from normlab.book.plots import plot_smoothness

    probes = {n: smoothness(tiny(norm=n), tiny_data, every=4, profile="full")
              for n in ("batch", "none")}
    fig = plot_smoothness(probes)
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    assert list(fig.axes[1].get_lines()[0].get_ydata()) == list(probes["batch"]["beta"])


def test_short_runs_are_probed_at_every_step(tiny_data):
    from normlab.book.smoothness import PROBES, probe_interval

    config = tiny(norm="layer")                       # 200 images, batch 25: 8 steps
    assert probe_interval(config, tiny_data) == 1
    assert probe_interval(tiny(epochs=100), tiny_data) == 800 // PROBES
    assert list(smoothness(config, tiny_data, profile="full")["step"]) == list(range(1, 9))


def test_a_failed_probe_run_is_reported_and_the_others_go_on(image_folder, monkeypatch):
    probed = []

    def probe(config, data, profile, retrain):
        if config.norm == "none":
            raise FloatingPointError("the loss is NaN\nat step 3")
        probed.append((config.norm, retrain))

    monkeypatch.setattr(sys.modules["normlab.book.reproduce"], "smoothness", probe)
    (part, summary), = reproduce(["smoothness"], "smoke", root=image_folder)
    assert part == "smoothness"
    assert [(c.norm, why) for c, why in summary.failed] == [
        ("none", "FloatingPointError: the loss is NaN")]
    assert probed == [(c.norm, False) for c in summary.trained] and ("batch", False) in probed
    assert not summary.found
    # --retrain reaches the probes: they are made again, not found
    probed.clear()
    (_, again), = reproduce(["smoothness"], "smoke", root=image_folder, retrain=True)
    assert probed == [(c.norm, True) for c in again.trained] == [(c.norm, True) for c in
                                                                  summary.trained]
