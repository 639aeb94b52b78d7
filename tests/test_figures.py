"""The book's figures draw what their docstrings promise, from real runs."""

import numpy as np
import pytest

from normlab import Config
from normlab.book import run
from normlab.book.plots import (plot_confusion, plot_curves, plot_effects, plot_predictions,
                                plot_seed_accuracies)
from normlab.book.report import shared_mistakes, wrong_sets
from normlab.book.verdicts import Difference


def tiny(**changes):
    return Config(**{"epochs": 2, "batch_size": 25, "lr": 0.05, "widths": (8,) * 6, **changes})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of batch and group norm on the tiny data, trained once for this module's
    tests, in a results folder of their own."""
    from conftest import CLASSES, synthetic_images

    from normlab.data import CIFAR10

    data = CIFAR10(*synthetic_images(200, 0), *synthetic_images(50, 1), CLASSES, "synthetic-test")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NORMLAB_RESULTS", str(tmp_path_factory.mktemp("results")))
        env.setenv("NORMLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        for name in ("NORMLAB_DATA", "NORMLAB_PROFILE", "NORMLAB_TRAIN"):
            env.delenv(name, raising=False)
        return [run(tiny(norm=n, seed=s), data, progress=False)
                for n in ("batch", "group") for s in (0, 1)]


def test_curves_draw_the_mean_over_seeds_and_their_range(runs):
    ax_loss, ax_acc = plot_curves(runs).axes
    batch = np.asarray([r.history.test_loss for r in runs[:2]])
    line = ax_loss.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), batch.mean(axis=0))
    assert line.get_label() == "BatchNorm, test (2 seeds)"
    band = ax_loss.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(band.min(), batch.min()) and np.isclose(band.max(), batch.max())
    assert [line.get_label() for line in ax_acc.get_lines()] == [
        "BatchNorm, test (2 seeds)", "BatchNorm, train (2 seeds)",
        "GroupNorm, test (2 seeds)", "GroupNorm, train (2 seeds)"]


def test_confusion_shows_the_first_model_then_the_others_minus_it(runs, tiny_data):
    fig = plot_confusion([runs[0], runs[2]], tiny_data.classes)
    first, second = (ax.get_images()[0].get_array() for ax in fig.axes)
    assert np.allclose(first.sum(axis=1)[first.sum(axis=1) > 0], 100)
    assert np.allclose(second.sum(axis=1), 0, atol=1e-4)        # difference of two rows of 100
    assert "minus BatchNorm" in fig.axes[1].get_title()
    # the sign: the second model's share of true class c predicted as c, minus the first's
    c = int(tiny_data.test_labels[0])
    share = [100 * ((r.test_probs.argmax(dim=1) == c) & (r.test_labels == c)).sum().item()
             / (r.test_labels == c).sum().item() for r in (runs[0], runs[2])]
    assert second[c, c] == pytest.approx(share[1] - share[0], abs=1e-3)


def test_predictions_mark_each_wrong_prediction_in_red(runs, tiny_data):
    fig = plot_predictions([runs[0], runs[2]], [0, 1, 2], tiny_data)
    for ax, index in zip(fig.axes, (0, 1, 2)):
        texts = ax.texts
        assert len(texts) == 2
        for text, result in zip(texts, (runs[0], runs[2])):
            wrong = result.test_probs[index].argmax() != tiny_data.test_labels[index]
            assert (text.get_color() == "#B00020") == bool(wrong)


def test_shared_mistakes_against_independence(runs):
    table = shared_mistakes({r.config.norm: r for r in (runs[0], runs[2])}.values())["wrong test images"]
    wrong = wrong_sets([runs[0], runs[2]])
    n = len(runs[0].test_labels)
    assert table["all of them"] == len(wrong["batch"] & wrong["group"])
    assert table["all, if independent"] == round(len(wrong["batch"]) * len(wrong["group"]) / n)
    with pytest.raises(ValueError, match="one run per norm"):
        shared_mistakes(runs)


def test_effects_and_seed_accuracies_draw_every_value(runs):
    d = Difference("BatchNorm", "unchanged", -1.0, -2.5, 0.5, 0.2, "t")
    ax = plot_effects({"a change": {"BatchNorm": d}}, yardstick=2.0).axes[0]
    [container] = ax.containers
    assert container.lines[0].get_xdata()[0] == -1.0
    assert ax.patches[0].get_x() == pytest.approx(-2.0)               # the noise band
    ax = plot_seed_accuracies(runs).axes[0]
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections[::2]])
    assert sorted(dots) == pytest.approx(sorted(100 * r.test_accuracy for r in runs))
