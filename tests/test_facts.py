"""Stored facts (normlab.book.facts): computed once, keyed by what determines them, and
never computed, nor any model evaluated, with NORMLAB_TRAIN=never."""

import inspect
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from normlab import Config, Pipeline, predict
from normlab.book import facts, run
from normlab.book.parts import ablations, main, smallbatch
from normlab.book.probes import batch_statistics_accuracy, norm_layers, reestimate_batch_statistics


def tiny(**overrides):
    return Config(**{"epochs": 1, "batch_size": 32, "lr": 0.05, "widths": (8, 8, 8, 8, 8, 8),
                     **overrides})


@pytest.fixture
def result(tiny_data):
    return run(tiny(), tiny_data, progress=False)


CALLS = []


@facts.fact("demo")
def demo(result, data, k=3):
    """A fact for the tests: counts its computations."""
    CALLS.append(k)
    return {"value": 0.5, "k": k}


@pytest.fixture(autouse=True)
def _no_calls():
    CALLS.clear()


def stored_demo(result, data, k=3):
    """The record that demo(result, data, k) is stored in."""
    params = {"k": k, "data": data.identity, "test_images": len(data.test_labels)}
    return facts.fact_path("demo", result, params, "full")


def test_a_fact_is_computed_once_and_then_read(result, tiny_data):
    first, again = demo(result, tiny_data), demo(result, tiny_data, k=3)
    assert first == again == {"value": 0.5, "k": 3} and CALLS == [3]
    record = json.loads(stored_demo(result, tiny_data).read_text())
    assert record["result"] == result.info["key"] and record["params"]["k"] == 3
    assert record["revision"] == facts.revision(inspect.getsource(demo.__wrapped__))
    demo(result, tiny_data, 4)                                   # other parameters
    demo(result, tiny_data.subset(None, 40))                     # other data
    demo(replace(result, seconds=result.seconds + 1), tiny_data)  # a model trained again
    assert CALLS == [3, 4, 3, 3]


def test_a_fact_of_another_revision_is_computed_again(result, tiny_data):
    demo(result, tiny_data)
    path = stored_demo(result, tiny_data)
    path.write_text(json.dumps({**json.loads(path.read_text()), "revision": "another"}))
    demo(result, tiny_data)
    assert CALLS == [3, 3] and json.loads(path.read_text())["revision"] != "another"


def test_never_computes_nothing_and_names_the_missing_fact(result, tiny_data, monkeypatch):
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    with pytest.raises(FileNotFoundError, match="fact 'demo' of the batch model .* is missing.*reproduce"):
        demo(result, tiny_data)
    monkeypatch.delenv("NORMLAB_TRAIN")
    demo(result, tiny_data)
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    assert demo(result, tiny_data) == {"value": 0.5, "k": 3}          # read, found
    path = stored_demo(result, tiny_data)
    path.write_text(json.dumps({**json.loads(path.read_text()), "revision": "another"}))
    with pytest.raises(FileNotFoundError, match="outdated"):
        demo(result, tiny_data)
    assert CALLS == [3]


def test_never_forbids_evaluating_a_trained_model(result, monkeypatch):
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    with pytest.raises(RuntimeError, match="NORMLAB_TRAIN=never forbids evaluating"):
        result.model()


def test_a_damaged_fact_is_named(result, tiny_data):
    demo(result, tiny_data)
    path = stored_demo(result, tiny_data)
    path.write_text('{"fact": "demo", "val')
    with pytest.raises(ValueError, match=f"{path.name} does not load.*delete it"):
        demo(result, tiny_data)


def test_the_main_facts_are_what_the_probes_measure(tiny_data):
    r = run(tiny(seed=0), tiny_data, progress=False)
    pipeline = Pipeline.for_config(r.config, tiny_data)
    expected = batch_statistics_accuracy(r.model(), tiny_data.test_images, tiny_data.test_labels,
                                         pipeline, main.BATCH_SIZES)
    pd.testing.assert_series_equal(main.batch_statistics(r, tiny_data), expected)
    stats = main.activation_statistics(r, tiny_data, "channel")
    channels = sum(layer.weight.numel() for layer in norm_layers(r.model()).values())
    assert set(stats["where"]) == {"before", "after"} and len(stats) == 2 * channels
    table = main.alone_and_together(r, tiny_data)
    assert list(table.index) == ["eval mode", "train mode"]
    assert table.loc["eval mode", "largest change of a logit"] < 1e-4   # no batch in evaluation
    assert table.loc["train mode", "largest change of a logit"] > 1e-3  # batch norm's batch
    modes = main.c1_modes(r, tiny_data)
    assert modes.loc["evaluation (running statistics)", "max |difference from evaluation|"] == 0


def test_the_facts_of_the_repairs_and_ablations(tiny_data):
    r = run(tiny(), tiny_data, progress=False)
    pipeline = Pipeline.for_config(r.config, tiny_data)
    model = reestimate_batch_statistics(r.model(), tiny_data.train_images, pipeline)
    correct = predict(model, tiny_data.test_images, pipeline).argmax(dim=1) == tiny_data.test_labels
    assert smallbatch.precise_accuracy(r, tiny_data) == pytest.approx(correct.float().mean().item())
    instance = run(tiny(norm="instance"), tiny_data, progress=False)
    assert ablations.instance_by_order([r, instance]) == {"conv-relu-norm": instance}
    assert 0 <= ablations.pooled_spread(instance, tiny_data) < 1e-2  # pooled: beta, per image
    padded = run(tiny(norm="layer", crop_padding_mode="constant"), tiny_data, progress=False)
    shift = ablations.padding_shift(padded, tiny_data)
    assert list(shift.columns) == ["zeros", "mirrored"] and shift.index[0] == "C1"
    assert (shift >= 0).all().all()


def test_reproduce_stores_the_facts_a_chapter_reads(tiny_data, monkeypatch):
    """main.facts computes every fact; with NORMLAB_TRAIN=never, a chapter's calls find them."""
    results = [run(tiny(norm=n), tiny_data, progress=False) for n in ("batch", "layer")]
    main.facts(results, {(None, None): tiny_data})
    monkeypatch.setenv("NORMLAB_TRAIN", "never")
    for r in results:
        main.flip_accuracy(r, tiny_data)
        main.shift_gap(r, tiny_data)
        main.alone_and_together(r, tiny_data)
    assert main.batch_statistics(results[0], tiny_data)[1] >= 0
    with pytest.raises(FileNotFoundError, match="batch-statistics"):
        main.batch_statistics(results[1], tiny_data)      # only batch norm's is computed
    assert torch.is_tensor(results[0].state_dict["C1.conv.weight"])


def test_a_fact_is_stored_with_the_profile_its_result_was_found_in(tiny_data):
    smoke = run(tiny(seed=5), tiny_data, profile="smoke", progress=False)   # current: full
    demo(smoke, tiny_data)
    assert list((facts.results_dir() / "smoke" / "facts").glob("demo-*.json"))
    assert not (facts.results_dir() / "full" / "facts").exists()
