"""The studies' configs, and the probes that look inside trained models."""

import math
from dataclasses import asdict, replace

import pytest
import torch

from normlab import Config, Pipeline, make_optimizer, predict
from normlab.book import results, run, write_index
from normlab.book.cache import results_dir
from normlab.book.plots import plot_batch_size_sweep
from normlab.book.probes import (activation_statistics, batch_statistics_accuracy, norm_layers,
                                 reestimate_batch_statistics, with_batch_statistics)
from normlab.book.report import accuracy_by, errors_by_batch_size
from normlab.book.studies import (BOOK_NORMS, BOOK_SEEDS, BUDGET_EPOCHS, LR_GRID, MAIN, RECIPE_CHANGES,
                                  SHIFT_SEEDS, SMALL_BATCH_SIZE, SMOKE_BUDGET_EPOCHS, SMOKE_STEPS,
                                  SMOKE_TEST_IMAGES, STUDY,
                                  SWEEP_BATCH_SIZES, SWEEP_NORMS, WHY_NORMS, ablations,
                                  batch_size_sweep, book_parts, budgets, lr_tolerance,
                                  small_batch_repairs, study_config)
from normlab.data import channel_stats
from normlab.model import MAX_PARAMS, Net, count_parameters
from normlab.norms import batch_norm

from conftest import synthetic_images, write_image_folder


def differences(a: Config, b: Config) -> set[str]:
    a, b = asdict(a), asdict(b)
    return {k for k in a if a[k] != b[k]}


def test_sweep_changes_only_norm_batch_size_and_scaled_lr():
    configs = batch_size_sweep("full")
    assert {(c.norm, c.batch_size) for c in configs} == {
        (n, b) for n in SWEEP_NORMS for b in SWEEP_BATCH_SIZES}
    assert min(SWEEP_BATCH_SIZES) == 2 and max(SWEEP_BATCH_SIZES) >= 128
    assert len({c.lr / c.batch_size for c in configs}) == 1       # linear scaling
    assert all(differences(configs[0], c) <= {"norm", "batch_size", "lr"} for c in configs)
    assert all(c.epochs <= 20 for c in configs)


def test_the_study_setting_is_the_recipe_on_fewer_images_and_epochs():
    assert differences(MAIN, STUDY) == {"train_subset", "epochs"}
    assert STUDY.train_subset < 50_000 and STUDY.epochs < MAIN.epochs


def test_lr_tolerance_changes_only_the_peak_learning_rate():
    configs = lr_tolerance("full")
    assert [(c.norm, c.lr) for c in configs] == [(n, lr) for n in WHY_NORMS for lr in LR_GRID]
    assert max(LR_GRID) / min(LR_GRID) >= 100                    # two decades at least
    assert MAIN.lr in LR_GRID
    assert all(differences(study_config(c.norm, profile="full"), c) <= {"lr"} for c in configs)


def test_budgets_change_only_the_epochs():
    configs = budgets("full")
    assert [(c.norm, c.epochs) for c in configs] == [(n, e) for n in BOOK_NORMS
                                                     for e in BUDGET_EPOCHS]
    assert all(differences(study_config(c.norm, profile="full"), c) <= {"epochs"}
               for c in configs)
    assert [c.epochs for c in budgets("smoke")[:3]] == list(SMOKE_BUDGET_EPOCHS) == [1, 2, 5]


def test_small_batch_repairs_pair_each_model_with_its_reference_batch_size():
    repairs = small_batch_repairs("full")
    for configs in repairs.values():
        small = [c for c in configs if c.batch_size == SMALL_BATCH_SIZE]
        assert len(small) * 2 == len(configs)
        for config in small:
            reference = replace(config, batch_size=128, lr=MAIN.lr)
            assert reference in configs
    ws = repairs["group norm + WS"]
    assert all(c.weight_standardization and c.norm == "group" for c in ws)
    assert [replace(c, weight_standardization=False) for c in ws] == repairs["group norm"]


def test_the_book_has_its_nine_parts_and_main_trains_first():
    parts = book_parts("full")
    assert list(parts)[0] == "main"
    assert set(parts) == {"main", "precision", "ablations", "batchsizes", "lr", "budget",
                          "smallbatch", "smoothness", "shift"}
    # shift tests the main models of its seeds, with the main models' changes
    shorter = book_parts("full", main={"epochs": 5})
    assert shorter["shift"] == [c for c in shorter["main"] if c.seed in SHIFT_SEEDS]
    assert {c.epochs for c in shorter["shift"]} == {5}


@pytest.mark.parametrize("name, changed", [("residual", {"residual"}), ("order", {"order"}),
                                           ("groups", {"groups", "norm"}), ("seeds", {"seed"})])
def test_each_ablation_changes_one_thing(name, changed):
    configs = ablations("smoke")[name]
    unchanged = study_config("group", profile="smoke")
    assert unchanged in configs
    assert all(differences(study_config(c.norm, profile="smoke"), c) <= changed
               for c in configs)
    assert any(differences(unchanged, c) for c in configs)


def test_each_recipe_change_changes_its_fields_only_within_the_budget():
    configs = ablations("full")["recipe"]
    changes = [change for change in RECIPE_CHANGES.values() for _ in BOOK_NORMS]
    assert [c.norm for c in configs] == list(BOOK_NORMS) * len(RECIPE_CHANGES)
    for config, change in zip(configs, changes, strict=True):
        assert differences(study_config(config.norm, profile="full"), config) == set(change)
        assert count_parameters(config.build_model()) < MAX_PARAMS


def test_the_smoke_profile_changes_only_sizes_and_precision_and_trains_five_steps():
    full, smoke = book_parts("full"), book_parts("smoke")
    # the budget study trains its shortest budgets only
    full["budget"] = [c for c in full["budget"] if c.epochs in SMOKE_BUDGET_EPOCHS]
    for part in full:
        for big, small in zip(full[part], smoke[part], strict=True):
            assert differences(big, small) <= {"epochs", "train_subset", "test_subset", "precision"}
            assert small.train_subset == SMOKE_STEPS * small.batch_size
            assert small.test_subset == SMOKE_TEST_IMAGES
            assert small.precision == ("fp32" if big.precision == "fp32" else "auto")
            assert small.epochs == (big.epochs if part == "budget" else 1)
            # enough steps for OneCycle's warm-up and annealing, counted as fit counts them
            steps_per_epoch = -(-small.train_subset // small.batch_size)
            make_optimizer(Net(), small, steps=small.epochs * steps_per_epoch)


def test_onecycle_with_too_few_steps_says_what_to_do():
    with pytest.raises(ValueError, match="more images or epochs, or use a smaller batch"):
        make_optimizer(Net(), Config(), steps=3)


@pytest.fixture
def inputs():
    images, labels = synthetic_images(40)
    pipeline = Pipeline(*channel_stats(images), torch.device("cpu"), torch.float32)
    return images, labels, pipeline


def tiny_net(norm):
    torch.manual_seed(0)
    return Net(norm, widths=(8, 8, 8, 8, 8, 8))


def test_norm_layers_in_forward_order():
    assert list(norm_layers(tiny_net("batch"))) == [
        "C1", "C2", "C4", "C5", "C6", "C8", "C9", "C10"]


def test_layer_norm_gives_each_sample_zero_mean_unit_std(inputs):
    images, _, pipeline = inputs
    stats = activation_statistics(tiny_net("layer"), images, pipeline, over="sample")
    assert len(stats) == 8 * 2 * len(images)
    after = stats[stats["where"] == "after"]
    assert after["mean"].abs().max() < 1e-4
    assert (after["std"] - 1).abs().max() < 1e-2          # unbiased vs biased variance
    before = stats[stats["where"] == "before"]
    assert (before["std"] - 1).abs().max() > 0.1          # the input was not normalized


def test_instance_norm_gives_each_channel_zero_mean(inputs):
    images, _, pipeline = inputs
    stats = activation_statistics(tiny_net("instance"), images, pipeline, over="channel")
    assert stats[stats["where"] == "after"]["mean"].abs().max() < 1e-4
    with pytest.raises(ValueError, match="channel, sample"):
        activation_statistics(tiny_net("instance"), images, pipeline, over="pixel")


def test_batch_statistics_normalize_with_the_batch_and_keep_the_original(inputs):
    images, labels, pipeline = inputs
    model = tiny_net("batch").eval()
    layer = model.C1.norm
    layer.running_mean.fill_(3.0)
    copy = with_batch_statistics(model).eval()
    x = torch.randn(5, 8, 4, 4)
    expected = batch_norm(x, None, None, layer.weight, layer.bias, training=True)
    torch.testing.assert_close(copy.C1.norm(x), expected)
    assert (model.C1.norm.running_mean == 3.0).all()      # the original is untouched

    accuracy = batch_statistics_accuracy(model, images, labels, pipeline, (1, 40))
    assert list(accuracy.index) == [1, 40]
    probs = torch.cat([predict(copy, images[i:i + 1], pipeline) for i in range(3)])
    assert not torch.allclose(probs, predict(copy, images[:3], pipeline))  # batch-dependent
    running = torch.cat([predict(model, images[i:i + 1], pipeline) for i in range(3)])
    torch.testing.assert_close(running, predict(model, images[:3], pipeline))  # per image


def test_sweep_table_and_figure_show_every_run(tiny_data):
    configs = [Config(norm=norm, batch_size=b, epochs=1, lr=0.05, widths=(8,) * 6)
               for norm in ("batch", "group") for b in (8, 32)]
    results = [run(c, tiny_data, progress=False) for c in configs]
    table = accuracy_by(results, "batch_size")
    assert list(table.index) == ["batch", "group"] and list(table.columns) == [8, 32]
    assert table.loc["group", 8] == round(100 * results[2].test_accuracy, 2)
    ax = plot_batch_size_sweep(results, noise=1.5).axes[0]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["BatchNorm", "GroupNorm"]
    lines = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert list(lines[1].get_xdata()) == [8, 32]
    assert list(lines[1].get_ydata()) == [100 * (1 - r.test_accuracy) for r in results[2:]]
    errors = errors_by_batch_size(results)
    assert errors["group"][8] == pytest.approx(100 * (1 - results[2].test_accuracy), abs=0.01)
    assert errors["batch"][32] == pytest.approx(100 * (1 - results[1].test_accuracy), abs=0.01)


def test_every_config_of_the_book_names_its_precision():
    configs = [c for cs in book_parts("full").values() for c in cs]
    assert {c.precision for c in configs} == {"bf16", "fp32"}
    assert {c.precision for c in configs if c not in book_parts("full")["precision"]} == {"bf16"}


def test_results_of_a_part_and_the_index_of_what_is_found(tmp_path):
    image_folder = write_image_folder(tmp_path / "folder", 640, 30)   # 5 steps of 128

    with pytest.raises(ValueError, match="Valid values are main, precision"):
        results("mains", "smoke", root=image_folder)
    main = results("main", "smoke", root=image_folder)
    assert [(r.config.norm, r.config.seed) for r in main] == [
        (n, s) for s in BOOK_SEEDS for n in BOOK_NORMS]
    index = write_index("smoke", root=image_folder)
    assert (results_dir() / "smoke" / "index.csv").read_text().startswith("part,norm,seed,")
    rows = index[index["part"] == "main"]
    assert len(rows) == len(BOOK_SEEDS) * len(BOOK_NORMS) and (rows["preset"] == "main").all()
    assert set(rows["changes"].fillna("")) == {f"epochs=1 train_subset={SMOKE_STEPS * 128} "
                                               f"test_subset={SMOKE_TEST_IMAGES} precision=auto"}
    assert all((results_dir() / "smoke" / f).exists() for f in rows["file"])
    # nothing else was trained (in smoke, a study's unchanged models are the main models)
    assert set(index["file"]) == set(index[index["part"].isin(["main", "precision"])]["file"])


def test_reestimated_batch_statistics_are_those_of_the_given_images(tiny_data):
    config = Config(epochs=1, batch_size=25, lr=0.05, widths=(8,) * 6)
    result = run(config, tiny_data, progress=False)
    model = result.model()
    before = model.C1.norm.running_mean.clone()
    pipeline = Pipeline.for_config(config, tiny_data)
    # two batches of 50 that differ (the second one's images inverted): their means spread
    images = torch.cat([tiny_data.train_images[:50], 255 - tiny_data.train_images[:50]])
    adapted = reestimate_batch_statistics(model, images, pipeline, batch_size=50)
    with torch.no_grad(), pipeline.autocast():
        c1 = model.C1
        received = c1.relu(c1.conv(pipeline.inputs(images))).float()   # C1's norm input
    torch.testing.assert_close(adapted.C1.norm.running_mean, received.mean(dim=(0, 2, 3)),
                               atol=2e-2, rtol=2e-2)
    # the population variance over all 100 images, not the mean of the two batches' own
    # variances (which leaves out how far the batch means spread)
    population = received.var(dim=(0, 2, 3), correction=1)
    torch.testing.assert_close(adapted.C1.norm.running_var, population, atol=1e-4, rtol=1e-3)
    per_batch = torch.stack([b.var(dim=(0, 2, 3)) for b in received.split(50)]).mean(dim=0)
    assert not torch.allclose(per_batch, population, atol=1e-4, rtol=1e-2)
    torch.testing.assert_close(model.C1.norm.running_mean, before)      # original unchanged
    assert not adapted.training and adapted.C1.norm.momentum == model.C1.norm.momentum
    assert not torch.allclose(adapted.C1.norm.running_mean, before)
    plain = Config(epochs=1, batch_size=25, lr=0.05, widths=(8,) * 6, norm="group").build_model()
    copied = reestimate_batch_statistics(plain, images, pipeline)
    assert copied is not plain and all(torch.equal(a, b) for a, b in zip(
        plain.state_dict().values(), copied.state_dict().values()))


def test_every_smoke_run_has_the_steps_one_cycle_needs():
    # CI executes every chapter in the smoke profile: no part may ask for a run too short
    for configs in book_parts("smoke").values():
        for c in configs:
            steps = c.epochs * math.ceil(c.train_subset / c.batch_size)
            make_optimizer(torch.nn.Linear(1, 1), c, steps)   # raises where too few
