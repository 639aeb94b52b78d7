"""Distribution shifts computed in code, and test-time adaptation of batch norm."""

import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from normlab import Config, Pipeline
from normlab.book import run
from normlab.book.parts.shift import shift_drops, shift_summary
from normlab.book.cache import results_dir
from normlab.book.reproduce import reproduce
from normlab.book.parts.shift import SEVERITIES, SHIFTS, shift, shift_path, shift_table


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
    # blur is a Gaussian of the given standard deviation, not cut short by its kernel
    blurred = shift(tiny_data.test_images[:20], "blur", 3)
    sigma = SEVERITIES["blur"][2]
    full = TF.gaussian_blur(tiny_data.test_images[:20], kernel_size=31, sigma=sigma)
    assert (blurred.int() - full.int()).abs().max() <= 1


def test_unknown_shifts_and_images_not_uint8_are_refused():
    with pytest.raises(ValueError, match=r"uint8 images \(N, 3, H, W\) on the CPU.*float32"):
        shift(torch.zeros(1, 3, 8, 8), "blur", 1)
    with pytest.raises(ValueError, match="Unknown shift 'fog'. Valid values are gaussian"):
        shift(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "fog", 1)
    with pytest.raises(ValueError, match="severity must be 1, 2 or 3"):
        shift(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "blur", 4)


def test_shift_summary_compares_the_other_norms_with_re_estimated_batch_norm():
    # drops in points: under noise group norm loses 20 more than re-estimated batch norm,
    # under blur the same; the seeds add a little spread
    drops = {("batch", False, "gaussian noise"): 32, ("batch", True, "gaussian noise"): 10,
             ("group", False, "gaussian noise"): 30, ("batch", False, "blur"): 35,
             ("batch", True, "blur"): 20, ("group", False, "blur"): 20}
    rows = [{"norm": n, "seed": seed, "adapted": a, "shift": "clean", "severity": 0,
             "accuracy": 85.0} for n, a in dict.fromkeys((n, a) for n, a, _ in drops)
            for seed in range(3)]
    rows += [{"norm": n, "seed": seed, "adapted": a, "shift": name, "severity": severity,
              "accuracy": 85.0 - drop + (seed - 1) * {"batch": 0.5, "group": -0.5}[n] * (1 + a)}
             for (n, a, name), drop in drops.items() for seed in range(3) for severity in (1, 2, 3)]
    summary = shift_summary(pd.DataFrame(rows))
    noise, blur = summary["per_image"].split("; ")
    assert noise.startswith("under gaussian noise, GroupNorm vs re-estimated BatchNorm (+20.")
    assert blur == "under blur, none"
    only_group = shift_summary(pd.DataFrame([r for r in rows if r["norm"] == "group"]))
    assert only_group["per_image"] == "no batch-norm model was tested with re-estimated statistics"
    no_batch_blur = shift_summary(pd.DataFrame(
        [r for r in rows if not (r["norm"] == "batch" and r["shift"] == "blur")]))
    assert no_batch_blur["per_image"].endswith("; under blur, batch norm was not re-estimated")


def test_shift_table_adapts_batch_norm_only(tiny_data, monkeypatch):
    configs = [Config(norm=n, seed=s, epochs=1, batch_size=25, lr=0.05, widths=(8,) * 6)
               for s in (0, 1) for n in ("batch", "group")]
    results = [run(c, tiny_data, progress=False) for c in configs]
    pipeline = Pipeline.for_config(configs[0], tiny_data)
    table = shift_table(results, tiny_data.test_images, tiny_data.test_labels, pipeline)
    per_model = 1 + 3 * len(SHIFTS)
    assert len(table) == 2 * 3 * per_model                  # per seed: batch twice, group once
    assert set(table[table["adapted"]]["norm"]) == {"batch"}
    clean = table[(table["shift"] == "clean") & ~table["adapted"] & (table["seed"] == 0)
                  ].set_index("norm")["accuracy"]
    assert clean["batch"] == pytest.approx(100 * results[0].test_accuracy, abs=1e-4)
    assert clean["group"] == pytest.approx(100 * results[1].test_accuracy, abs=1e-4)
    drops = shift_drops(table)
    blur = table[(table["norm"] == "group") & (table["seed"] == 1) & (table["shift"] == "blur")]
    group_clean = 100 * results[3].test_accuracy
    assert drops.set_index(["norm", "seed", "adapted", "shift"]).loc[
        ("group", 1, False, "blur"), "drop"] == pytest.approx(group_clean - blur["accuracy"].mean())
    summary = shift_summary(table)
    assert summary["drops"].startswith("BatchNorm ") and " points and GroupNorm " in summary["drops"]
    assert summary["differences"].startswith("under gaussian noise, ")
    assert summary["differences"].count("; under ") == len(SHIFTS) - 1
    assert summary["adaptation"].startswith("batch norm's test accuracy ")
    assert "the noise for " in summary["adaptation"]
    assert summary["per_image"].startswith("under gaussian noise, ")
    # each model's rows are kept beside it, and found again without testing anything
    assert all(shift_path(r).exists() for r in results)
    monkeypatch.setattr(sys.modules["normlab.book.parts.shift"], "shifted_accuracy", None)
    assert shift_table(results, tiny_data.test_images, tiny_data.test_labels, pipeline).equals(table)
    with pytest.raises(TypeError):                         # retrain: computed again
        shift_table(results[:1], tiny_data.test_images, tiny_data.test_labels, pipeline,
                    retrain=True)
    # ... unless the model was trained again (another record) or the shifts changed
    retrained = replace(results[0], seconds=results[0].seconds + 1)
    with pytest.raises(TypeError):                         # computed again: shifted_accuracy
        shift_table([retrained], tiny_data.test_images, tiny_data.test_labels, pipeline)
    monkeypatch.setitem(SEVERITIES, "blur", (0.4, 1.0, 1.5))
    with pytest.raises(TypeError):
        shift_table(results[1:2], tiny_data.test_images, tiny_data.test_labels, pipeline)


def test_reproduce_tests_the_main_models_under_shift_once(image_folder):
    tiny = {"batch_size": 16}
    (_, main), (_, first) = reproduce(["main", "shift"], "smoke", seeds=(0,), main=tiny,
                                      workers=1, root=image_folder)
    assert len(main.trained) == 3 and len(first.trained) == 3 and not first.failed
    (_, again), = reproduce(["shift"], "smoke", seeds=(0,), main=tiny, root=image_folder)
    assert len(again.found) == 3 and not again.trained
    tables = {p: p.stat().st_mtime_ns for p in (results_dir() / "smoke").glob("shift-*.json")}
    assert len(tables) == 3
    # --retrain computes the tables again, from the models already trained
    models = {p: p.stat().st_mtime_ns for p in (results_dir() / "smoke").glob("*.pt")}
    (_, forced), = reproduce(["shift"], "smoke", seeds=(0,), main=tiny, root=image_folder,
                             retrain=True)
    assert len(forced.trained) == 3 and not forced.found
    assert {p: p.stat().st_mtime_ns for p in (results_dir() / "smoke").glob("*.pt")} == models
    rewritten = {p: p.stat().st_mtime_ns for p in (results_dir() / "smoke").glob("shift-*.json")}
    assert rewritten.keys() == tables.keys()
    assert all(rewritten[p] != tables[p] for p in tables)
