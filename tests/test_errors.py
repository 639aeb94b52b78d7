"""Bad input gets a clear error that says what to do; nothing is silently wrong or lost."""

import json
import math
import os
import re
import time

import pytest
import torch

from normlab import Config, choose_device
from normlab.book import load_result, prepare_data, run
from normlab.book.cache import cache_key, result_paths
from normlab.book.cli import main
from normlab.data import load_image_folder
from normlab.store import atomic_write_json

from conftest import write_image_folder


def tiny(**changes):
    return Config(**{"epochs": 1, "batch_size": 32, "lr": 0.05, "widths": (8,) * 6, **changes})


# -- the data ---------------------------------------------------------------------------

def test_a_symlink_loop_in_a_class_folder_is_refused(image_folder):
    loop = image_folder / "train" / "dog" / "loop"
    loop.symlink_to("..")
    with pytest.raises(ValueError, match=f"{loop}.*a link to a folder"):
        load_image_folder(image_folder)


def test_an_eleventh_class_folder_is_refused(image_folder):
    for split in ("train", "test"):
        (image_folder / split / "zebra").mkdir()
        next((image_folder / split / "cat").iterdir()).rename(image_folder / split / "zebra" / "0.png")
    with pytest.raises(ValueError, match=r"train holds 11 class folders.*CIFAR-10 has 10"):
        load_image_folder(image_folder)


def test_a_missing_split_is_named(image_folder):
    (image_folder / "test").rename(image_folder / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"no test/ folder under .*: CIFAR-10 as an image "
                                                r"folder has train/ and test/"):
        load_image_folder(image_folder)


def test_an_empty_class_folder_names_its_split(image_folder):
    for path in (image_folder / "test" / "frog").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"test/frog.* holds no image"):
        load_image_folder(image_folder)


# -- settings of the environment --------------------------------------------------------

@pytest.mark.parametrize("variable, value, valid", [
    ("NORMLAB_TRAIN", "bogus", "auto, never"), ("NORMLAB_PROFILE", "huge", "full, smoke")])
def test_every_setting_is_checked_when_it_is_read_even_for_a_cached_result(
        tiny_data, monkeypatch, variable, value, valid):
    run(tiny(), tiny_data, profile="full", progress=False)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"Unknown value '{value}' for {variable}. "
                                         f"Valid values are {valid}"):
        run(tiny(), tiny_data, progress=False)


# -- results that do not load -----------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated tensors", "invalid record", "incomplete record"])
def test_a_damaged_result_names_its_file_and_the_way_out(tiny_data, damage):
    run(tiny(), tiny_data, profile="full", progress=False, exact_precision=True)
    record, tensors = result_paths(tiny(), cache_key(tiny(), tiny_data, "full"), "full")
    if damage == "truncated tensors":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "invalid record":
        record.write_text("{not json")
    else:
        record.write_text('{"norm": "batch"}')
    damaged = tensors if damage == "truncated tensors" else record
    with pytest.raises(ValueError, match=f"result {damaged} does not load.*retrain.*or delete"):
        load_result(tiny(), tiny_data, "full")
    again = run(tiny(), tiny_data, profile="full", progress=False, retrain=True,
                exact_precision=True)   # recovers
    assert load_result(tiny(), tiny_data, "full").test_accuracy == again.test_accuracy


# -- the recipe and the command line ----------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"epochs": -1}, "epochs must be at least 1"),
    ({"lr": math.nan}, "lr must be a finite number above 0"),
    ({"lr": math.inf}, "lr must be a finite number above 0"),
    ({"crop_padding": 40}, "crop_padding must be from 0 to 31"),
    ({"crop_padding": -1}, "crop_padding must be from 0 to 31"),
    ({"pct_start": 0.0}, "pct_start must be a finite number above 0 and below 1"),
    ({"widths": (8, 8)}, "widths needs 6 channel counts"),
    ({"widths": (64,) * 6}, r"has \d{3},\d{3} trainable parameters, over the budget of fewer "
                            r"than 50,000: use smaller widths"),
])
def test_a_bad_recipe_is_refused_when_it_is_made(changes, message):
    state = torch.random.get_rng_state()
    with pytest.raises(ValueError, match=message):
        Config(**changes)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "batch_size must be at least 1"),
    (["--epochs", "-1"], "epochs must be at least 1"),
    (["--lr", "nan"], "lr must be a finite number above 0"),
    (["--lr", "inf"], "lr must be a finite number above 0"),
    (["--crop-padding", "40"], "crop_padding must be from 0 to 31"),
    (["--device", "bogus"], "Unknown value 'bogus' for argument device"),
])
def test_bad_numbers_on_the_command_line_are_usage_errors(image_folder, capsys, flags, message):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--data", str(image_folder), *flags])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_a_device_that_is_not_there_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU is available here.*auto, cpu"):
        choose_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="has 1 CUDA GPU.*cuda:0 to cuda:0"):
        choose_device("cuda:5")


@pytest.mark.parametrize("command", ["reproduce", "compare"])
def test_reproduce_and_compare_take_seeds_not_a_seed(image_folder, capsys, command):
    # not an abbreviation of --seeds either: that would train the whole book
    with pytest.raises(SystemExit) as exit:
        main([command, "--seed", "3", "--data", str(image_folder)])
    assert exit.value.code == 2 and "unrecognized arguments: --seed 3" in capsys.readouterr().err


def test_divergence_is_a_one_line_error_naming_epoch_step_and_learning_rate(image_folder):
    with pytest.raises(SystemExit, match=r"^error: the run diverged: its loss became NaN or "
                                         r"infinite at epoch 1, step \d+ \(learning rate "
                                         r"[\d.e+-]+\); lower --lr"):
        main(["train", "--norm", "none", "--lr", "1e6", "--epochs", "1", "--batch-size", "16",
              "--data", str(image_folder)])


# -- nothing lost -----------------------------------------------------------------------

def test_a_results_folder_that_cannot_be_written_is_found_before_training(tiny_data, tmp_path,
                                                                          monkeypatch):
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / "full").write_text("a file where the folder should be")
    trained = []
    monkeypatch.setattr("normlab.book.runs.fit", lambda *a, **k: trained.append(1))
    with pytest.raises(ValueError, match=r"Cannot write results to .*full.*NORMLAB_RESULTS"):
        run(tiny(), tiny_data, profile="full", progress=False)
    assert not trained


def test_a_stale_temporary_file_of_an_interrupted_write_is_removed_by_the_next(tmp_path):
    target = tmp_path / "r.json"
    stale, fresh = (tmp_path / f".r.json.{name}.tmp" for name in ("killed", "writing"))
    stale.write_text("half")
    fresh.write_text("half")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    atomic_write_json({"a": 1}, target)
    assert not stale.exists() and fresh.exists()        # another writer's file is left alone
    assert target.read_text().strip().startswith("{")


def test_training_data_of_the_wrong_size_is_still_named(tmp_path):
    folder = write_image_folder(tmp_path / "folder", 20, 10)
    import torchvision

    torchvision.io.write_png(torch.zeros(3, 16, 16, dtype=torch.uint8),
                             str(folder / "train" / "cat" / "0003.png"))
    with pytest.raises(ValueError, match=r"0003.png has shape \(3, 16, 16\), expected"):
        prepare_data(tiny(), folder)


# -- a recipe of the wrong types -----------------------------------------------------------

@pytest.mark.parametrize("field, value, says", [
    ("norm", None, "a string"), ("residual", "False", "True or False"),
    ("batch_size", True, "a whole number"), ("seed", 1.5, "a whole number"),
    ("groups", 2.0, "a whole number"), ("epochs", 2.5, "a whole number"),
    ("lr", "0.1", "a number"), ("train_subset", 10.0, "a whole number or None"),
    ("widths", (16, 32, 16, 24, 32, 32.0), "a tuple of whole numbers"),
    ("flip", 1, "True or False")])
def test_a_field_of_another_type_is_refused_naming_it(field, value, says):
    from normlab import Config

    with pytest.raises(TypeError, match=rf"Config\.{field} must be {says}, got "):
        Config(**{field: value})


def test_the_types_a_record_holds_are_accepted():
    import json
    from dataclasses import asdict

    from normlab import Config

    config = Config(lr=1, train_subset=100, widths=[16, 32, 16, 24, 32, 32])   # an int lr is a number
    assert Config(**json.loads(json.dumps(asdict(config)))) == config


def test_retrain_and_train_never_conflict_and_say_so(tiny_data, monkeypatch):
    run(tiny(), tiny_data, profile="full", progress=False)
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    with pytest.raises(ValueError, match=r"retrain=True \(--retrain\) asks to train .* and "
                                         r"NORMLAB_TRAIN=never forbids training: drop one"):
        run(tiny(), tiny_data, profile="full", progress=False, retrain=True)


def test_a_results_setting_that_names_a_file_is_a_one_line_error(monkeypatch, image_folder):
    from normlab.book.cli import main

    monkeypatch.setenv("NORMLAB_RESULTS", "/dev/null")
    with pytest.raises(SystemExit, match=r"^error: /dev/null is not a folder .*point "
                                         r"NORMLAB_RESULTS at a folder"):
        main(["train", "--epochs", "1", "--batch-size", "16", "--data", str(image_folder)])


@pytest.mark.parametrize("seed", [-1, 2 ** 64])
def test_a_seed_beyond_64_bits_is_refused_with_its_range(seed):
    from normlab import Config

    with pytest.raises(ValueError, match=r"seed must be from 0 to 2\*\*64 - 1"):
        Config(seed=seed)
    Config(seed=2 ** 64 - 1).build_model()   # the largest trains


# -- records that are not taken on trust -----------------------------------------------------

def _files(config, data):
    return result_paths(config, cache_key(config, data, "full"), "full")


def test_an_edited_accuracy_is_found_against_the_stored_predictions(tiny_data):
    run(tiny(), tiny_data, profile="full", progress=False, exact_precision=True)
    record_path, _ = _files(tiny(), tiny_data)
    record = json.loads(record_path.read_text())
    record["test_accuracy"] = min(1.0, record["test_accuracy"] + 0.2)
    record_path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"gives a test accuracy of .*, and its stored test "
                                         r"predictions .* \(edited\?\): delete"):
        load_result(tiny(), tiny_data, "full")


def test_a_result_copied_under_another_datas_key_is_refused(tiny_data):
    other = tiny_data.subset(100, None)
    run(tiny(), tiny_data, profile="full", progress=False, exact_precision=True)
    for source, target in zip(_files(tiny(), tiny_data), _files(tiny(), other)):
        target.write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match=rf"trained on the data {re.escape(tiny_data.identity)}, "
                                         rf"not on {re.escape(other.identity)}"):
        load_result(tiny(), other, "full")


def test_a_tensor_file_that_is_not_its_records_is_refused(tiny_data):
    run(tiny(), tiny_data, profile="full", progress=False, exact_precision=True)
    _, tensor_path = _files(tiny(), tiny_data)
    tensors = torch.load(tensor_path, weights_only=True)
    next(iter(tensors["state_dict"].values())).add_(1.0)   # other weights, a valid file
    torch.save(tensors, tensor_path)
    with pytest.raises(ValueError, match=r"is not the one its record .* was written with"):
        load_result(tiny(), tiny_data, "full")


@pytest.mark.parametrize("device", ["meta", "xpu"])
def test_a_device_torch_parses_but_normlab_does_not_train_on_is_refused(device):
    with pytest.raises(ValueError, match=rf"device='{device}' is not one normlab trains on. "
                                         rf"Valid values are auto, cpu, cuda, cuda:N, mps"):
        choose_device(device)
