"""Distribution shifts computed in code, and test-time adaptation of batch norm."""

import pytest
import torch

from normlab import Config, Pipeline
from normlab.book import run
from normlab.book.chapters import shift_summary
from normlab.book.shift import SEVERITIES, SHIFTS, shift, shift_table


def test_every_shift_keeps_shape_and_dtype_and_grows_with_severity(tiny_data):
    images = tiny_data.test_images[:20]
    for name in SHIFTS:
        distances = []
        for severity in (1, 2, 3):
            shifted = shift(images, name, severity)
            assert shifted.shape == images.shape and shifted.dtype == torch.uint8
            distances.append((shifted.float() - images.float()).abs().mean().item())
        assert 0 < distances[0] < distances[2], (name, distances)
    assert torch.equal(shift(images, "gaussian noise", 2), shift(images, "gaussian noise", 2))


def test_contrast_and_brightness_are_what_their_names_say(tiny_data):
    images = tiny_data.test_images[:20].float()
    low = shift(tiny_data.test_images[:20], "contrast", 3).float()
    assert low.std(dim=(1, 2, 3)).mean() < images.std(dim=(1, 2, 3)).mean()
    bright = shift(tiny_data.test_images[:20], "brightness", 1).float()
    assert bright.mean() > images.mean()
    assert SEVERITIES["jpeg"][1] == 75          # the JPEG copy's quality


def test_unknown_shifts_are_refused():
    with pytest.raises(ValueError, match="Unknown shift 'fog'. Valid values are gaussian"):
        shift(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "fog", 1)
    with pytest.raises(ValueError, match="severity must be 1, 2 or 3"):
        shift(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "blur", 4)


def test_shift_table_adapts_batch_norm_only(tiny_data):
    configs = [Config(norm=n, epochs=1, batch_size=25, lr=0.05, widths=(8,) * 6)
               for n in ("batch", "group")]
    results = [run(c, tiny_data, progress=False) for c in configs]
    pipeline = Pipeline.for_config(configs[0], tiny_data)
    table = shift_table(results, tiny_data.test_images, tiny_data.test_labels, pipeline)
    per_model = 1 + 3 * len(SHIFTS)
    assert len(table) == 3 * per_model                         # batch twice, group once
    assert set(table[table["adapted"]]["norm"]) == {"batch"}
    clean = table[(table["shift"] == "clean") & ~table["adapted"]].set_index("norm")["accuracy"]
    assert clean["batch"] == pytest.approx(100 * results[0].test_accuracy, abs=1e-4)
    assert clean["group"] == pytest.approx(100 * results[1].test_accuracy, abs=1e-4)
    summary = shift_summary(table)
    assert summary["losses"].startswith("BatchNorm ") and " points and GroupNorm " in summary["losses"]
    assert summary["adaptation"].startswith(("it recovers ", "it loses "))
    assert " on average, most under " in summary["adaptation"]
