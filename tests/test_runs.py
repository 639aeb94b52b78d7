"""Training runs, caching (keys, atomic writes), errors and the mistakes rule."""

import json
import re
import os
import pickle
import platform
import stat
import sys
from dataclasses import replace

import pytest
import torch

import normlab
from torch import nn

from normlab import Config, Diverged, Pipeline, evaluate, fit, predict
from normlab.book import flip_accuracy, machine_name, misclassified, report, run
from normlab.book.cache import cache_key, result_paths
from normlab.book.parts.main import flip_summary
from normlab.book.runs import processor_name
from normlab.store import atomic_save, atomic_write_json


def key(config, data, device="auto"):
    return cache_key(config, data, "full", device)


def tiny_config(**overrides):
    return Config(**{"epochs": 3, "batch_size": 32, "lr": 0.05, "widths": (8, 8, 8, 8, 8, 8),
                     **overrides})


def test_run_learns_and_caches(tiny_data, monkeypatch):
    result = run(tiny_config(), tiny_data, progress=False)
    h = result.history
    assert len(h.test_accuracy) == 3 and h.train_loss[-1] < h.train_loss[0]
    assert result.test_accuracy > 0.3  # chance is 0.1
    # the objective carries label smoothing; the plain cross-entropy of the same batches,
    # with no smoothing to pay for, lies below it once the model is confident
    assert h.train_cross_entropy[-1] < h.train_loss[-1]
    plain = run(tiny_config(epochs=1, label_smoothing=0.0), tiny_data, progress=False).history
    assert plain.train_cross_entropy == pytest.approx(plain.train_loss, rel=1e-5)
    record_path, tensor_path = result_paths(result.config, key(result.config, tiny_data), "full")
    record = json.loads(record_path.read_text())
    for field in ("norm", "seed", "epochs", "train_accuracy", "test_accuracy", "seconds", "history"):
        assert field in record
    assert torch.load(tensor_path, weights_only=True)["test_probs"].shape == (50, 10)

    monkeypatch.setattr(normlab.book.runs, "fit", lambda *a, **k: pytest.fail("retrained"))
    cached = run(tiny_config(), tiny_data, progress=False)
    assert cached.test_accuracy == result.test_accuracy
    torch.testing.assert_close(cached.model()(torch.zeros(1, 3, 32, 32)),
                               result.model()(torch.zeros(1, 3, 32, 32)))


def test_same_seed_same_result_changed_config_new_key(tiny_data):
    a = run(tiny_config(epochs=1), tiny_data, progress=False, retrain=True)
    b = run(tiny_config(epochs=1), tiny_data, progress=False, retrain=True)
    assert a.history.train_loss == b.history.train_loss
    keys = {key(tiny_config(epochs=1, **change), tiny_data)
            for change in ({}, {"seed": 1}, {"lr": 0.1}, {"norm": "group"},
                           {"crop_padding_mode": "constant"}, {"crop_padding_mode": "replicate"})}
    assert len(keys) == 6
    assert cache_key(tiny_config(), tiny_data, "smoke") != key(tiny_config(), tiny_data)


def test_interrupted_run_leaves_no_result(tiny_data, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(normlab.book.runs, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(epochs=1), tiny_data, progress=False)
    assert not [p for p in (tmp_path / "results").rglob("*") if p.is_file()]


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_written_files_get_the_modes_of_plain_files(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_json({"a": 1}, tmp_path / "r.json")
        atomic_save({"w": torch.zeros(2)}, tmp_path / "r.pt")
    finally:
        os.umask(previous)
    for name in ("r.json", "r.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_a_diverged_run_is_a_result_that_says_where_it_diverged(tiny_data, monkeypatch):
    config = tiny_config(lr=1e6, norm="none", label_smoothing=0.0)
    with pytest.raises(Diverged, match=r"at epoch 1, step \d+") as error:
        fit(config.build_model(), tiny_data, config, progress=False)
    assert isinstance(error.value, FloatingPointError) and error.value.epoch == 1
    copy = pickle.loads(pickle.dumps(error.value))          # as a worker process sends it
    assert (str(copy), copy.step, copy.lr) == (str(error.value), error.value.step, error.value.lr)
    result = run(config, tiny_data, progress=False)
    assert result.diverged and result.info["diverged"]["epoch"] == 1
    assert result.info["diverged"]["lr"] > 0 and result.history.test_accuracy == []
    assert 0 <= result.test_accuracy <= 1
    monkeypatch.setattr(normlab.book.runs, "fit", None)          # found, not trained again
    assert run(config, tiny_data, progress=False).diverged


def test_run_each_loads_the_data_once_for_every_subset(image_folder, monkeypatch):
    from normlab.book import run_each

    monkeypatch.setenv("NORMLAB_DATA", str(image_folder))
    configs = [tiny_config(epochs=1, batch_size=8, seed=s, train_subset=n, precision="fp32")
               for n in (40, 60) for s in (0, 1)]
    loads = []
    monkeypatch.setattr(sys.modules["normlab.book.runs"], "load_data",
                        lambda *args: loads.append(args) or normlab.load_data(*args))
    results = run_each(configs, progress=False)
    assert [r.config for r in results] == configs and len(loads) == 1   # two subsets of one
    assert [r.test_accuracy for r in results] == [run(c, progress=False).test_accuracy
                                                  for c in configs]    # found, as run finds them


def test_misclassified_are_the_most_confident_mistakes(tiny_data):
    result = run(tiny_config(epochs=1), tiny_data, progress=False)
    mistakes = misclassified(result, k=5, data=tiny_data)
    confidence, predicted = result.test_probs.max(dim=1)
    wrong = (predicted != result.test_labels).nonzero().flatten()
    assert len(mistakes) == min(5, len(wrong))
    assert all(m.true != m.predicted for m in mistakes)
    assert [m.confidence for m in mistakes] == sorted([m.confidence for m in mistakes], reverse=True)
    assert mistakes[0].confidence == pytest.approx(confidence[wrong].max().item())
    assert torch.equal(mistakes[0].image, tiny_data.test_images[mistakes[0].index])


def test_flip_averages_each_image_with_its_mirror_image(tiny_data):
    result = run(tiny_config(epochs=1), tiny_data, progress=False)
    model, images = result.model(), tiny_data.test_images
    pipeline = Pipeline.for_config(result.config, tiny_data)
    mirrored = predict(model, images.flip(-1), pipeline)
    averaged = predict(model, images, pipeline, flip=True)
    torch.testing.assert_close(averaged, (predict(model, images, pipeline) + mirrored) / 2)
    torch.testing.assert_close(predict(model, images.flip(-1), pipeline, flip=True), averaged)
    accuracy = (averaged.argmax(dim=1) == tiny_data.test_labels).float().mean().item()
    assert flip_accuracy(result, tiny_data) == pytest.approx(accuracy)


def test_flip_accuracy_is_stored_once_per_model_and_data(tiny_data, monkeypatch):
    result = run(tiny_config(epochs=1, seed=3), tiny_data, progress=False)
    first = flip_accuracy(result, tiny_data)
    monkeypatch.setattr(sys.modules["normlab.book.parts.main"], "evaluate", None)
    assert flip_accuracy(result, tiny_data) == first          # not evaluated again
    with pytest.raises(TypeError):                            # a model trained again is
        flip_accuracy(replace(result, seconds=result.seconds + 1), tiny_data)
    with pytest.raises(TypeError):                            # other test images are
        flip_accuracy(result, tiny_data.subset(None, len(tiny_data.test_labels) - 1))


def test_flip_summary_per_norm_over_seeds(tiny_data):
    results = [run(tiny_config(epochs=1, seed=s), tiny_data, progress=False) for s in (0, 1)]
    summary = flip_summary(results, tiny_data)
    single = [100 * r.test_accuracy for r in results]
    flipped = [100 * flip_accuracy(r, tiny_data) for r in results]
    assert list(summary.index) == ["batch"]
    assert summary.loc["batch", ("single view", "mean")] == pytest.approx(sum(single) / 2, abs=0.005)
    assert summary.loc["batch", ("flip-averaged", "mean")] == pytest.approx(sum(flipped) / 2, abs=0.005)
    gain = (sum(flipped) - sum(single)) / 2
    assert summary.loc["batch", ("gain", "mean")] == pytest.approx(gain, abs=0.005)


def test_train_never_loads_cached_results_and_refuses_to_train(tiny_data, monkeypatch):
    cached = run(tiny_config(epochs=1), tiny_data, progress=False)
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    assert run(tiny_config(epochs=1), tiny_data, progress=False).test_accuracy == cached.test_accuracy
    record_path, _ = result_paths(tiny_config(epochs=2), key(tiny_config(epochs=2), tiny_data), "full")
    with pytest.raises(FileNotFoundError, match=f"No result {record_path}.*NORMLAB_TRAIN=never"):
        run(tiny_config(epochs=2), tiny_data, progress=False)
    assert not record_path.exists()
    monkeypatch.setenv("NORMLAB_TRAIN", "sometimes")
    with pytest.raises(ValueError, match="Valid values are auto, never"):
        run(tiny_config(epochs=2), tiny_data, progress=False)


def test_the_key_names_the_precision_and_not_the_machine(tiny_data, monkeypatch):
    bf16 = key(tiny_config(precision="bf16"), tiny_data)
    assert bf16 != key(tiny_config(precision="fp32"), tiny_data)
    # a machine without native bf16, or a GPU, finds the same result
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert key(tiny_config(precision="bf16"), tiny_data) == bf16
    # "auto" means this machine's choice, and is keyed by it
    assert (key(tiny_config(precision="auto"), tiny_data, "cpu")
            == key(tiny_config(precision="fp32"), tiny_data))


def test_unknown_profile_and_precision(tiny_data, monkeypatch):
    with pytest.raises(ValueError, match="'huge' for argument profile. Valid values are full, smoke"):
        run(tiny_config(), tiny_data, profile="huge")
    monkeypatch.setenv("NORMLAB_PROFILE", "huge")
    with pytest.raises(ValueError, match="Valid values are full, smoke"):
        run(tiny_config(), tiny_data)
    with pytest.raises(ValueError, match="Valid values are auto, fp32, bf16, fp16"):
        normlab.choose_precision("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="Valid values are auto, fp32, bf16, fp16"):
        Config(precision="fp8")


def test_seed_summary_is_mean_and_std_over_seeds(tiny_data):
    results = [run(tiny_config(epochs=1, seed=s, norm=n), tiny_data, progress=False)
               for s in (0, 1, 2) for n in ("batch", "group")]
    summary = report.seed_summary(results)
    tests = torch.tensor([100 * r.test_accuracy for r in results if r.config.norm == "group"],
                         dtype=torch.float64)
    assert list(summary.index) == ["batch", "group"] and list(summary[("runs", "")]) == [3, 3]
    assert summary.loc["group", ("test accuracy (%)", "mean")] == pytest.approx(
        round(tests.mean().item(), 2), abs=0.01)
    assert summary.loc["group", ("test accuracy (%)", "std")] == pytest.approx(
        round(tests.std().item(), 2), abs=0.01)


def test_accuracies_and_run_to_run_noise_group_the_seeds(tiny_data):
    runs = {lr: [run(tiny_config(epochs=1, seed=s, lr=lr), tiny_data, progress=False)
                 for s in (0, 1, 2)] for lr in (0.05, 0.1)}
    everything = runs[0.05] + runs[0.1] + runs[0.1][:1]          # a repeat counts once
    assert report.accuracies(runs[0.1]) == {
        "BatchNorm": [100 * r.test_accuracy for r in runs[0.1]]}
    sd, df = report.run_to_run_noise(everything)
    variances = [torch.tensor([100 * r.test_accuracy for r in group], dtype=torch.float64).var()
                 for group in runs.values()]
    assert df == 4
    assert sd == pytest.approx(((variances[0] + variances[1]) / 2).sqrt().item())
    effects = report.effects(runs[0.1][:1], runs[0.05][:1], (sd, df))
    assert list(effects) == ["BatchNorm"]
    assert effects["BatchNorm"].difference == pytest.approx(
        100 * (runs[0.1][0].test_accuracy - runs[0.05][0].test_accuracy))


def test_against_published_gives_the_margin_of_the_lowest_seed(tiny_data):
    results = [run(tiny_config(epochs=1, seed=s), tiny_data, progress=False) for s in (0, 1)]
    lowest = min(round(100 * r.test_accuracy, 2) for r in results)
    table = report.against_published(results, {"batch": 12.5, "group": 50.0})
    assert list(table.index) == ["batch"]
    assert table.loc["batch", "lowest seed (%)"] == pytest.approx(lowest)
    assert table.loc["batch", "lowest seed - published (points)"] == pytest.approx(lowest - 12.5)


def test_processor_name_tells_cpu_generations_of_one_name_apart(tmp_path):
    def cpuinfo(*models):
        path = tmp_path / "cpuinfo"
        path.write_text("\n\n".join(f"processor\t: {i}\ncpu family\t: 25\nmodel\t\t: {m}\n"
                                      f"model name\t: AMD EPYC\nflags\t\t: avx512f"
                                      for i, m in enumerate(models)))
        return path

    assert processor_name(cpuinfo(17, 17)) == "AMD EPYC (family 25, model 17)"
    assert processor_name(cpuinfo(17)) != processor_name(cpuinfo(1))
    (tmp_path / "cpuinfo").write_text("model name\t: Some CPU\n")
    assert processor_name(tmp_path / "cpuinfo") == "Some CPU"
    assert processor_name(tmp_path / "missing") == platform.processor()


def test_machine_name_names_the_gpu_where_there_is_one():
    cpu = {"processor": "AMD EPYC (family 25, model 17)", "threads": 2, "device": "cpu",
           "gpu": None}
    assert machine_name(cpu) == "AMD EPYC (family 25, model 17), 2 threads, cpu"
    assert machine_name({**cpu, "threads": 1}) == "AMD EPYC (family 25, model 17), 1 thread, cpu"
    assert machine_name({**cpu, "device": "cuda", "gpu": "NVIDIA H100"}) == (
        "NVIDIA H100 (host CPU: AMD EPYC (family 25, model 17))")


def test_fit_trains_any_module_and_the_pipeline_places_it(tiny_data):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10))
    config = Config(epochs=3, batch_size=32, lr=0.05)
    pipeline = Pipeline.for_config(config, tiny_data, device="cpu")
    history = fit(model, tiny_data, config, pipeline, progress=False)
    assert len(history.train_loss) == 3 and history.train_loss[-1] < history.train_loss[0]
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert evaluate(model, tiny_data.test_images, tiny_data.test_labels, pipeline)[1] > 0.2


def test_build_model_leaves_the_global_random_generator_alone():
    state = torch.random.get_rng_state()
    a, b = Config(seed=3).build_model(), Config(seed=3).build_model()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_never_names_the_data_the_recipe_was_trained_on(tiny_data, monkeypatch):
    run(tiny_config(epochs=1), tiny_data, progress=False)
    other = tiny_data.subset(100, None)
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    with pytest.raises(FileNotFoundError, match=f"on the data {re.escape(other.identity)}.*"
                                                f"exist for the data {tiny_data.identity}"):
        run(tiny_config(epochs=1), other, progress=False)


def test_provenance_says_in_one_line_where_the_results_were_trained(tiny_data):
    a, b = (run(tiny_config(epochs=1, seed=s), tiny_data, progress=False) for s in (0, 1))
    line = report.provenance([a, b])
    assert line == (f"Trained in {a.info['precision']} on {machine_name(a.info)}, with torch "
                    f"{torch.__version__}, on unknown data ({tiny_data.identity}).")
    b.info = {**b.info, "gpu": "NVIDIA H200", "device": "cuda"}
    assert report.provenance([a, b, b]).startswith(f"Trained 1 of 3 in {a.info['precision']} on ")
    assert "; 2 of 3 in" in report.provenance([a, b, b])


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                               ((9, 0), torch.bfloat16)])
def test_auto_precision_on_a_gpu_is_what_it_computes_natively(monkeypatch, tiny_data,
                                                              capability, dtype):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert normlab.choose_precision("auto", torch.device("cuda")) == dtype
    # and "auto" is keyed by what it resolves to there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    named = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    assert (key(tiny_config(precision="auto"), tiny_data, "cuda")
            == key(tiny_config(precision=named), tiny_data))


def test_fp16_trains_with_a_scaled_loss(tiny_data, monkeypatch):
    scaled, scale = [], torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale",
                        lambda self, loss: scaled.append(self.is_enabled()) or scale(self, loss))
    run(tiny_config(epochs=1, precision="fp16"), tiny_data, progress=False, exact_precision=True)
    assert scaled and all(scaled)
    scaled.clear()
    run(tiny_config(epochs=1, precision="bf16"), tiny_data, progress=False, exact_precision=True)
    assert scaled and not any(scaled)
