"""The precision a run trains in: the recipe's where the machine computes it natively, the
machine's own where it would emulate it (a live run, the smoke profile), and a committed
result found whatever the machine. The capability is mocked both ways."""

import json
import warnings
from dataclasses import replace

import pytest
import torch

import normlab
from normlab import Config
from normlab.book import run, studies
from normlab.book.cache import cache_key
from normlab.book.cli import main
from normlab.book.runs import current_profile

CPU = torch.device("cpu")


def tiny_config(**overrides):
    return Config(**{"epochs": 2, "batch_size": 32, "lr": 0.05, "widths": (8, 8, 8, 8, 8, 8),
                     **overrides})


@pytest.fixture(params=[True, False], ids=["native-bf16", "emulated-bf16"])
def bf16_native(request, monkeypatch):
    """A CPU with (True) or without (False) native bf16, as oneDNN reports it."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: request.param)
    return request.param


def no_bf16(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)


def test_native_precision_and_emulation_follow_the_cpu(bf16_native):
    assert normlab.native_precision(CPU) == ("bf16" if bf16_native else "fp32")
    assert normlab.emulated("bf16", CPU) is not bf16_native
    assert not normlab.emulated("fp32", CPU) and not normlab.emulated("auto", CPU)
    assert normlab.choose_precision("auto", CPU) == (torch.bfloat16 if bf16_native
                                                     else torch.float32)


@pytest.mark.parametrize("capability, native, bf16_emulated", [((7, 5), "fp16", True),
                                                               ((8, 0), "bf16", False)])
def test_on_a_gpu_bf16_is_native_from_ampere_and_fp16_always(monkeypatch, capability, native,
                                                             bf16_emulated):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert normlab.native_precision(cuda) == native
    assert normlab.emulated("bf16", cuda) is bf16_emulated
    assert not normlab.emulated("fp16", cuda)


def test_a_live_run_trains_in_the_native_precision_and_says_so(tiny_data, monkeypatch, capsys):
    no_bf16(monkeypatch)
    result = run(tiny_config(precision="bf16"), tiny_data, progress=False)
    assert capsys.readouterr().out == "bf16 is emulated on this CPU: training in fp32\n"
    assert result.config.precision == "fp32" and result.info["precision"] == "float32"
    assert result.info["key"] == cache_key(tiny_config(precision="fp32"), tiny_data, "full")
    # asked for again, the fp32 result is found, not trained (and nothing is said)
    monkeypatch.setattr("normlab.book.runs.fit", lambda *a, **k: pytest.fail("trained again"))
    again = run(tiny_config(precision="bf16"), tiny_data, progress=False)
    assert again.info["key"] == result.info["key"] and capsys.readouterr().out == ""


def test_a_result_in_the_recipes_precision_is_found_on_any_machine(tiny_data, monkeypatch):
    trained = run(tiny_config(precision="bf16"), tiny_data, progress=False, exact_precision=True)
    no_bf16(monkeypatch)
    monkeypatch.setattr("normlab.book.runs.fit", lambda *a, **k: pytest.fail("trained again"))
    found = run(tiny_config(precision="bf16"), tiny_data, progress=False)
    assert found.config.precision == "bf16" and found.info["key"] == trained.info["key"]


def test_exact_precision_trains_as_named_even_where_emulated(tiny_data, monkeypatch, capsys):
    no_bf16(monkeypatch)
    result = run(tiny_config(precision="bf16"), tiny_data, progress=False, exact_precision=True)
    assert result.config.precision == "bf16" and result.info["precision"] == "bfloat16"
    assert "emulated" not in capsys.readouterr().out


def test_train_never_names_the_recipe_not_its_native_stand_in(tiny_data, monkeypatch):
    no_bf16(monkeypatch)
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    with pytest.raises(FileNotFoundError, match="precision='bf16'"):
        run(tiny_config(precision="bf16"), tiny_data, progress=False)


def test_the_smoke_profile_trains_in_the_native_precision(tiny_data, bf16_native):
    smoke = studies.book_parts("smoke")
    assert {c.precision for part in smoke.values() for c in part} == {"auto", "fp32"}
    assert [c.precision for c in smoke["precision"]] == ["fp32", "auto"]
    # keyed by what "auto" is on this machine; the full profile keeps the recipe's bf16
    native = "bf16" if bf16_native else "fp32"
    config = smoke["main"][0]
    assert (cache_key(config, tiny_data, "smoke")
            == cache_key(replace(config, precision=native), tiny_data, "smoke"))
    assert {c.precision for c in studies.book_parts("full")["main"]} == {"bf16"}


def test_the_cli_trains_natively_unless_a_precision_is_named(image_folder, monkeypatch, capsys):
    no_bf16(monkeypatch)
    args = ["train", "--epochs", "1", "--batch-size", "16", "--data", str(image_folder)]
    main(args)
    assert "bf16 is emulated on this CPU: training in fp32" in capsys.readouterr().out
    main([*args, "--precision", "bf16"])
    assert "emulated" not in capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in (normlab.book.cache.results_dir() / "full")
               .glob("*.json")]
    assert sorted(r["info"]["precision"] for r in records) == ["bfloat16", "float32"]


def test_an_unknown_setting_is_named_in_a_warning(monkeypatch):
    monkeypatch.setenv("NORMLAB_PRECISION", "fp32")
    with pytest.warns(UserWarning, match=r"Unknown setting NORMLAB_PRECISION, ignored: "
                                         r"normlab reads NORMLAB_DATA, .*NORMLAB_TRAIN"):
        current_profile()
    monkeypatch.delenv("NORMLAB_PRECISION")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        current_profile()


def test_a_sweep_trains_one_result_once_whatever_configs_name_it(image_folder, monkeypatch):
    from normlab.book.workers import run_many

    no_bf16(monkeypatch)   # "auto" is fp32 here: the two configs are one result
    configs = [tiny_config(precision="fp32"), tiny_config(precision="auto")]
    summary = run_many(configs, "full", workers=1, root=image_folder, progress=False)
    assert (summary.trained, summary.found, summary.failed) == (configs[:1], configs[1:], [])


def test_retrain_with_train_never_conflicts_for_a_native_stand_in_too(tiny_data, monkeypatch):
    no_bf16(monkeypatch)
    run(tiny_config(precision="bf16"), tiny_data, progress=False)   # trained in fp32
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    with pytest.raises(ValueError, match=r"asks to train .* again, and NORMLAB_TRAIN=never"):
        run(tiny_config(precision="bf16"), tiny_data, progress=False, retrain=True)
