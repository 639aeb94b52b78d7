"""The command line, end to end on a tiny image folder."""

import pytest

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


def test_bad_norm_is_a_clear_error(image_folder):
    with pytest.raises(SystemExit,
                       match="error: Unknown value 'weight'.*Valid values are batch, layer, group"):
        main(["train", "--norm", "weight", "--data", str(image_folder)])


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match=r"error: No CIFAR-10 found under .*set NORMLAB_DATA"):
        main(["train", "--data", str(tmp_path / "nowhere")])


def test_reproduce_trains_every_book_model_per_seed(image_folder, capsys):
    main(["reproduce", "--parts", "main", "--epochs", "1", "--batch-size", "16", "--seeds", "0", "1",
          "--data", str(image_folder)])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split()[:2] for line in lines[-6:]]  # the table after the epoch lines
    assert rows == [["batch", "0"], ["layer", "0"], ["group", "0"],
                    ["batch", "1"], ["layer", "1"], ["group", "1"]]
