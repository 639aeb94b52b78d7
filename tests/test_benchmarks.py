"""The benchmarks run end to end at tiny sizes and report what they promise. Their
numbers are not checked here: speed is measured by running them, never by a test."""

import json
from pathlib import Path

import pytest
from conftest import run_python

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(name: str, *args: str) -> list[dict]:
    """Run ``benchmarks/<name>`` with ``args``; return the JSON lines it printed."""
    printed = run_python(str(BENCHMARKS / name), *args, timeout=600)
    return [json.loads(line) for line in printed.splitlines() if line.startswith("{")]


def test_throughput_prints_and_writes_one_record(image_folder, tmp_path):
    output = tmp_path / "records" / "throughput.json"
    [record] = run_benchmark("throughput.py", "--quick", "--batch-size", "16", "--workers", "2",
                             "--data", str(image_folder), "--output", str(output))
    assert json.loads(output.read_text()) == record
    # the rates are recorded to 0.1 image/s and the speed-up to 0.01: at the low rates of a
    # busy machine those roundings, not the arithmetic, set how far the ratio may be off
    ours, base = record["normlab_images_per_s"], record["baseline_images_per_s"]
    slack = ours / base * (0.05 / ours + 0.05 / base) + 0.005
    assert abs(record["speedup"] - ours / base) <= slack
    assert list(record["ablation_images_per_s"]) == ["in_memory_fp32_nchw", "+channels_last",
                                                     "+auto_precision", "+keep_freed_memory"]
    assert (record["ablation_images_per_s"]["+keep_freed_memory"]
            == record["normlab_images_per_s"])
    # GFLOP/s are recorded to 0.1: on a slow or busy machine that rounding is the larger error
    assert record["normlab_gflop_per_s"] == pytest.approx(
        record["normlab_images_per_s"] * record["training_gflop_per_image"], rel=0.01, abs=0.05)
    assert record["fraction_of_matmul"] == pytest.approx(
        record["normlab_gflop_per_s"] / record["matmul_gflop_per_s"], abs=0.002)
    assert record["peak_rss_mib"] > 0
    assert record["sweep_workers"] == 2 and record["sweep_speedup"] == pytest.approx(
        record["sweep_images_per_s"] / record["baseline_images_per_s"], rel=0.01)
    assert set(record["warmup_s"]) == {"baseline", *record["ablation_images_per_s"]}


def test_norm_speed_times_every_layer_and_network_relative_to_batch_norm():
    import importlib.util

    spec = importlib.util.spec_from_file_location("norm_speed", BENCHMARKS / "norm_speed.py")
    norm_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(norm_speed)
    lines = run_benchmark("norm_speed.py", "--repeats", "3", "--batch-size", "4")
    # one line per layer, memory format and input dtype, in each of them
    layers = {(line["layer"], line["memory_format"], line["dtype"]) for line in lines
              if "layer" in line}
    assert layers == {(n, f, d) for n in norm_speed.LAYERS for f in norm_speed.FORMATS
                      for d in norm_speed.DTYPES}
    networks = {line["network"]: line for line in lines if "network" in line}
    assert set(networks) == {"batch", "layer", "group", norm_speed.TORCH_GN}
    # each network's time relative to batch norm's, as its own milliseconds say (to the
    # roundings of the record: 0.1 ms and 0.01)
    batch = networks["batch"]["ms_per_step"]
    for line in networks.values():
        ratio = line["ms_per_step"] / batch
        assert abs(line["relative_to_batch"] - ratio) <= ratio * 0.05 / line["ms_per_step"] \
            + 0.05 / batch * ratio + 0.005


def test_compile_run_projects_a_whole_run_from_its_first_and_later_epochs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compile_run", BENCHMARKS / "compile_run.py")
    compile_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compile_run)
    # the first epoch holds the compilation; the other 19 run at the later epochs' mean
    assert compile_run.projected([80.0, 25.0, 27.0]) == pytest.approx(80 + 19 * 26)
    assert compile_run.projected([30.0]) == pytest.approx(20 * 30)

