"""The book's figures draw what their docstrings promise, from real runs."""

import numpy as np
import pytest

from normlab import Config, Pipeline, predict
from normlab.book import run
from normlab.book.parts.smallbatch import repairs_table
from normlab.book.probes import reestimate_batch_statistics
from normlab.book.plots import (plot_against, plot_confusion, plot_curves, plot_effects,
                                plot_predictions, plot_seed_accuracies, plot_shift)
from normlab.book.report import accuracy_table, shared_mistakes, wrong_sets
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
    train = np.asarray([r.history.train_cross_entropy for r in runs[:2]])
    assert ax_loss.get_lines()[1].get_label() == "BatchNorm, train (2 seeds)"
    np.testing.assert_allclose(ax_loss.get_lines()[1].get_ydata(), train.mean(axis=0))
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


def test_accuracy_against_a_field_marks_diverged_runs_apart(tiny_data):
    results = [run(tiny(norm="none", lr=lr, label_smoothing=0.0), tiny_data, progress=False)
               for lr in (0.05, 1e6)]
    assert results[1].diverged and not results[0].diverged
    ax = plot_against(results, "lr", "peak learning rate", log=True, noise=1.0).axes[0]
    [line] = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert list(line.get_xdata()) == [0.05]                  # the diverged run is not on it
    [crosses] = [c for c in ax.collections if len(c.get_offsets()) == 1
                 and c.get_offsets()[0][0] == 1e6]
    assert crosses.get_label() == "no norm, diverged"
    per_epoch = accuracy_table(results)["seconds per epoch"]   # diverged in its first epoch
    assert per_epoch[0] > 0 and np.isnan(per_epoch[1])


def test_repairs_table_adds_precise_batch_norm(tiny_data):
    repairs = {"batch norm": [run(tiny(norm="batch", batch_size=b), tiny_data, progress=False)
                              for b in (5, 25)],
               "group norm": [run(tiny(norm="group"), tiny_data, progress=False)]}
    table = repairs_table(repairs, {(None, None): tiny_data})
    assert list(table["method"]) == ["batch norm", "batch norm, precise"] * 2 + ["group norm"]
    assert table.iloc[0]["test accuracy (%)"] == pytest.approx(
        100 * repairs["batch norm"][0].test_accuracy)
    first = repairs["batch norm"][0]
    pipeline = Pipeline.for_config(first.config, tiny_data)
    precise = reestimate_batch_statistics(first.model(), tiny_data.train_images, pipeline)
    predicted = predict(precise, tiny_data.test_images, pipeline).argmax(dim=1)
    assert table.iloc[1]["test accuracy (%)"] == pytest.approx(
        100 * (predicted == tiny_data.test_labels).float().mean().item())


def test_shift_figure_has_a_panel_per_shift_and_dashes_for_adapted(runs, tiny_data):
    from normlab import Pipeline
    from normlab.book.parts.shift import SHIFTS, shift_table

    table = shift_table([runs[0], runs[2]], tiny_data.test_images, tiny_data.test_labels,
                        Pipeline.for_config(runs[0].config, tiny_data))
    fig = plot_shift(table)
    assert [ax.get_title() for ax in fig.axes] == list(SHIFTS)
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert styles == {"BatchNorm": "-", "BatchNorm, re-estimated": "--", "GroupNorm": "-"}


def test_lr_tolerance_and_lead_read_as_sentences(tiny_data):
    from normlab.book.parts.why import lead_by, lr_tolerance_table

    results = [run(tiny(norm="none", lr=lr, label_smoothing=0.0), tiny_data, progress=False)
               for lr in (0.02, 0.05, 1e6)]
    table = lr_tolerance_table(results, (1.0, 6))
    row = table.loc["none"]
    assert row["diverged at"] == "1e+06" and row["best peak lr"] in (0.02, 0.05)
    assert row["sentence"].startswith("Without normalization, the best peak rate is 0.0")
    other = "0.05" if row["best peak lr"] == 0.02 else "0.02"
    assert row["sentence"].endswith((f"within the noise of it: {other}; the network diverged "
                                     f"at 1e+06.", "every other rate that trained is below it "
                                     "beyond the noise; the network diverged at 1e+06."))
    only_diverged = lr_tolerance_table(results[2:], (1.0, 6)).loc["none", "sentence"]
    assert only_diverged == "Without normalization, the network diverged at every peak rate tried."
    budget = [run(tiny(norm=n, epochs=e), tiny_data, progress=False)
              for n in ("batch", "group") for e in (1, 2)]
    [(other, phrase)] = lead_by(budget, "epochs", (1.0, 6), unit="epoch").items()
    assert other == "group" and " points at 1 epoch (" in phrase and " at 2 epochs (" in phrase


def test_book_pace_is_the_least_disturbed_main_run_on_the_first_found_runs_machine(
        runs, monkeypatch):
    import copy

    from normlab.book.parts import main
    from normlab.book.runs import machine_name

    def timed(seconds, processor):
        r = copy.copy(runs[2])                   # group norm, seed 0
        r.history = copy.copy(r.history)
        r.history.seconds = seconds
        r.info = {**r.info, "processor": processor}
        return r

    # seed 0 ran on A, slowed by other work; seed 3 ran on B, faster; seed 2 is missing
    found = {0: timed([90.0, 100.0, 300.0], "A"), 1: timed([40.0, 40.0, 45.0], "A"), 2: None,
             3: timed([10.0] * 3, "B"), 4: timed([60.0] * 3, "A")}
    monkeypatch.setattr(main, "load_result",
                        lambda config, data: found[config.seed] if config.norm == "group" else None)
    monkeypatch.setattr(main, "run", None)   # looked up, never trained
    assert main.book_pace("group", None) == (machine_name(found[0].info), 40.0, 3)
    assert main.book_pace("layer", None) is None


def test_epoch_seconds_takes_each_norms_least_disturbed_run(runs):
    import copy

    from normlab.book.report import epoch_seconds

    timed = [copy.copy(r) for r in runs]           # batch 0, batch 1, group 0, group 1
    for r, seconds in zip(timed, ([2.0, 3.0, 900.0], [5.0, 5.0, 5.0], [4.0, 4.0, 4.0],
                                  [9.0, 1.0, 9.0])):
        r.history = copy.copy(r.history)
        r.history.seconds = seconds
    table = epoch_seconds(timed)
    assert list(table.index) == ["batch", "group"] and list(table["runs"]) == [2, 2]
    # batch: medians 3 (one epoch slowed by other work) and 5; group: medians 4 and 9
    assert list(table["seconds per epoch"]) == [3.0, 4.0]


def test_every_norm_has_its_own_colour():
    from normlab.book.plots import NORM_COLORS
    from normlab.norms import NORM_NAMES

    assert set(NORM_COLORS) == set(NORM_NAMES)
    assert len(set(NORM_COLORS.values())) == len(NORM_COLORS)
