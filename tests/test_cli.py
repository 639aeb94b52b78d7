"""The command line, end to end on a tiny image folder."""

import re

import pytest

from normlab.book import wall_times
from normlab.book.cli import main


def test_rf_and_summary(capsys):
    main(["rf", "--norm", "batch"])
    out = capsys.readouterr().out
    assert "receptive_field" in out and "output" in out
    main(["summary", "--norm", "group"])
    out = capsys.readouterr().out
    assert "GroupNorm" in out and "Residual" in out and "Total params: 48,554" in out


def test_train_prints_epochs_and_final_accuracy(image_folder, capsys):
    main(["train", "--norm", "layer", "--epochs", "2", "--batch-size", "16",
          "--data", str(image_folder)])
    out = capsys.readouterr().out
    assert "test_accuracy" in out and "final: train accuracy" in out


def test_bad_norm_is_a_usage_error(image_folder, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--norm", "weight", "--data", str(image_folder)])
    assert exit.value.code == 2
    assert "Unknown value 'weight' for argument norm. Valid values are batch, layer, group" in (
        capsys.readouterr().err)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match=r"error: No CIFAR-10 found under .*set NORMLAB_DATA"):
        main(["train", "--data", str(tmp_path / "nowhere")])


def test_reproduce_trains_every_book_model_per_seed_in_parallel(image_folder, capsys):
    main(["reproduce", "--parts", "main", "--epochs", "1", "--batch-size", "16", "--seeds", "0", "1",
          "--workers", "2", "--data", str(image_folder)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("main: 6 trained, 0 found, 0 failed in ")
    rows = [line.split()[:2] for line in lines[2:8]]  # the table after the summary
    assert rows == [["batch", "0"], ["layer", "0"], ["group", "0"],
                    ["batch", "1"], ["layer", "1"], ["group", "1"]]
    assert lines[-1].startswith("reproduce: ") and lines[-1].endswith(" minutes in all")
    times = wall_times("full")
    assert list(times.index) == ["main"] and times.loc["main", "trained"] == 6
    assert times.loc["main", "where"].startswith("2 workers x 1 thread on ")
    # Resumed with a third seed: the record covers both calls, so the six earlier runs
    # count as trained, not found.
    main(["reproduce", "--parts", "main", "--epochs", "1", "--batch-size", "16", "--seeds", "0", "1",
          "2", "--workers", "2", "--data", str(image_folder)])
    resumed = wall_times("full").loc["main"]
    assert (resumed["trained"], resumed["found"], resumed["calls"]) == (9, 0, 2)
    assert resumed["minutes"] >= times.loc["main", "minutes"]


def test_data_prints_the_sizes_and_the_content_identity(image_folder, capsys):
    from normlab import load_data

    main(["data", "--data", str(image_folder)])
    out = capsys.readouterr().out
    assert "80 training and 30 test images" in out and load_data(image_folder).identity in out


@pytest.mark.parametrize("command", ["train", "compare", "reproduce"])
def test_help_lists_every_recipe_field_with_its_default(command, capsys):
    from dataclasses import fields

    from normlab import Config

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())   # argparse wraps the help text
    own = {"compare": {"norm", "seed"}, "reproduce": {"norm", "seed"}}.get(command, set())
    for field in fields(Config):
        flag = "--" + field.name.replace("_", "-")
        assert bool(re.search(rf"{flag}\b", text)) is (field.name not in own), flag
    assert "--batch-size BATCH_SIZE images per optimizer step (default 128)" in text
    assert "--residual, --no-residual residual additions" in text
    assert "--widths N N N N N N channels" in text


def test_every_recipe_field_is_a_flag_that_reaches_the_config():
    from normlab.book.cli import config_from_args, get_args_parser

    args = get_args_parser().parse_args(
        ["train", "--norm", "group", "--groups", "8", "--no-residual", "--train-subset", "none",
         "--test-subset", "100", "--widths", "8", "16", "16", "16", "16", "16", "--lr", "0.2",
         "--crop-padding-mode", "constant", "--profile", "full"])
    config = config_from_args(args, args.norm)
    assert (config.norm, config.groups, config.residual, config.train_subset,
            config.test_subset, config.widths, config.lr, config.crop_padding_mode) == (
        "group", 8, False, None, 100, (8, 16, 16, 16, 16, 16), 0.2, "constant")
    # what is not given is the preset's
    assert config.epochs == 20 and config.flip is True


def test_a_flag_of_another_type_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--epochs", "2.5"])
    assert exit.value.code == 2 and "--epochs: invalid int value: '2.5'" in capsys.readouterr().err


def test_reproduce_offers_every_part_of_the_book():
    from normlab.book.cli import PART_HELP
    from normlab.book.studies import book_parts

    assert tuple(PART_HELP) == tuple(book_parts("full"))
