"""Where and how fast the book's runs ran, and the precision part: what the chapter on
reproducing the book shows (:func:`chapter`): the main runs' epoch times, the throughput
benchmarks by machine, torch.compile's record, each part's training time, and the fp32
run of batch norm against the bf16 seeds."""

from __future__ import annotations

import json

import pandas as pd

from ...model import Net
from ...norms import NORM_LABELS
from ...train import make_optimizer
from .. import verdicts
from ..cache import benchmark_records
from ..report import ChapterFacts, accuracies, accuracy_table, epoch_seconds, provenance, run_to_run_noise
from ..cache import results_dir
from ..runs import Result, machine_name, resolve_profile, run, run_each
from ..studies import BOOK_NORMS, BOOK_SEEDS, book_config, book_data, book_parts, results

#: Wall time of each part's last reproduction (written by :func:`normlab.book.reproduce.reproduce`).
WALL_TIMES_NAME = "reproduce-times.json"
#: The glue names of the benchmarks' sentences, and what they say without a record.
BENCHMARK_VALUES = ("bench_runs", "bench_machines", "speedup_by_size", "sweep_by_size",
                    "rates_by_size", "matmul_share", "compile_gain", "allocator_gain",
                    "faults_usual", "faults_default", "faults_kept")
NO_RECORD = "(no benchmark record here)"


def _unique(results_: list[Result]) -> list[Result]:
    """``results_`` with each trained model once (a part repeats its unchanged models)."""
    return list({r.info["key"]: r for r in results_}.values())


def part_times(profile: str | None = None) -> pd.DataFrame:
    """Per part of the book: the models it trains (each once) and their training time
    (hours), with a row ``all``."""
    profile = resolve_profile(profile)
    rows, seen, data = [], set(), book_data(profile)
    for part in book_parts(profile):
        new = [r for r in _unique(results(part, profile, data=data)) if r.info["key"] not in seen]
        seen.update(r.info["key"] for r in new)
        rows.append({"part": part, "models": len(new),
                     "hours": sum(r.seconds for r in new) / 3600})
    table = pd.DataFrame(rows).set_index("part")
    table.loc["all"] = table.sum()
    table["models"] = table["models"].astype(int)
    return table


def wall_times(profile: str | None = None) -> pd.DataFrame:
    """The wall time (minutes) of the :func:`reproduce` calls that trained each part's
    results (summed over the calls that resumed it), with how many runs they trained, how
    many they found already there, how many calls, where and when the last ran; empty
    where none was recorded."""
    path = results_dir() / (resolve_profile(profile)) / WALL_TIMES_NAME
    times = json.loads(path.read_text()) if path.exists() else {}
    return pd.DataFrame.from_dict(times, orient="index").rename_axis("part")


def main_timings(profile: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """The main runs' seconds per epoch per norm (:func:`normlab.book.report.epoch_seconds`)
    relative to batch norm, and the values quoted with it."""
    main = run_each([book_config(norm, profile, seed=s) for norm in BOOK_NORMS for s in BOOK_SEEDS],
                    profile=profile)
    table = epoch_seconds(main)
    per_epoch = table["seconds per epoch"]
    table["relative to batch norm"] = (per_epoch / per_epoch["batch"]).round(2)
    others = table.drop(index="batch")["relative to batch norm"]
    return table, {
        "main_count": str(len(main)), "total_minutes": f"{sum(r.seconds for r in main) / 60:.0f}",
        "epoch_ratios": verdicts.listing([f"an epoch of {NORM_LABELS[n]} takes {verdicts.times(r)} "
                                          f"one of BatchNorm" for n, r in others.items()]),
        "main_provenance": provenance(main),
        "machine": f"{machine_name(main[0].info)}, {main[0].info['precision']}"}


def _times(s: pd.Series) -> str:
    """'3.32 to 3.61 times as fast (median 3.49, 3 runs)' for the speed-ups ``s``."""
    if len(s) == 1:
        return f"{s.iloc[0]:.2f} times as fast (1 run)"
    return f"{s.min():.2f} to {s.max():.2f} times as fast (median {s.median():.2f}, {len(s)} runs)"


def benchmarks() -> tuple[object, dict[str, str]]:
    """The committed throughput benchmarks (:func:`normlab.book.cache.benchmark_records`),
    one row per record with a letter per machine (rates are comparable within one machine
    only), as a styled table, and the sentences quoted with it (:data:`BENCHMARK_VALUES`;
    :data:`NO_RECORD` where there is none, as in a fresh environment)."""
    records = benchmark_records()
    names = [machine_name(r) for r in records]
    letters = {name: chr(ord("A") + i) for i, name in enumerate(dict.fromkeys(names))}
    letter = pd.Series([letters[name] for name in names], name="letter", dtype=object)
    bench = pd.DataFrame([{
        "machine": letters[name],
        "date (UTC)": r["date"][:16].replace("T", " "), "batch size": r["batch_size"],
        "usual (images/s)": r["baseline_images_per_s"], "normlab (images/s)": r["normlab_images_per_s"],
        "speed-up": r["speedup"], "sweep speed-up": r.get("sweep_speedup"),
        "+ compile (images/s)": r["ablation_images_per_s"].get("+compile"),
        "normlab (GFLOP/s)": r["normlab_gflop_per_s"], "peak memory (MiB)": r["peak_rss_mib"],
        **({"peak GPU memory (MiB)": r["peak_gpu_mib"]} if r.get("gpu") else {})}
        for r, name in zip(records, names)])
    values = dict.fromkeys(BENCHMARK_VALUES, NO_RECORD)
    if not records:
        return bench, values
    by_machine = bench.groupby(letter)
    medians = bench.groupby([letter, "batch size"]).median(numeric_only=True)
    matmul = pd.DataFrame({"rate": [r["matmul_gflop_per_s"] for r in records],
                           "fraction": [r["fraction_of_matmul"] for r in records]}
                          ).groupby(letter).median()
    # --quick runs skip torch.compile: their rows have no rate to compare
    compile_gain = (bench["+ compile (images/s)"] / bench["normlab (images/s)"]
                    ).groupby(letter).median().dropna()
    allocator_gain = pd.Series([r["ablation_images_per_s"]["+keep_freed_memory"]
                                / r["ablation_images_per_s"]["+auto_precision"] for r in records])
    faults = pd.DataFrame([{"batch size": r["batch_size"], **r["page_faults_per_step"]}
                           for r in records]).groupby("batch size").median()
    kept = faults["+keep_freed_memory"].max()
    values.update(
        bench_runs=str(len(records)),
        bench_machines=(f"{len(letters)} machines (" if len(letters) > 1 else "one machine (")
        + "; ".join(f"{letter}: {name}" for name, letter in letters.items()) + ")",
        speedup_by_size="; ".join(
            f"on {letter}, " + "; ".join(f"at batch size {size}, {_times(s)}"
                                         for size, s in runs.groupby("batch size")["speed-up"])
            for letter, runs in by_machine),
        sweep_by_size="; ".join(
            f"on {letter}, " + "; ".join(f"at batch size {size}, {_times(s)}"
                                         for size, s in runs.groupby("batch size")["sweep speed-up"])
            for letter, runs in bench.dropna(subset="sweep speed-up").groupby(letter))
        or "(no record with a sweep here)",
        rates_by_size="; ".join(
            f"on {letter} at {size}, {row['usual (images/s)']:.0f} and {row['normlab (images/s)']:.0f}"
            for (letter, size), row in medians.iterrows()),
        matmul_share="; ".join(f"{100 * row['fraction']:.0f}% of {row['rate']:.0f} GFLOP/s on {letter}"
                               for letter, row in matmul.iterrows()),
        compile_gain=" and ".join(f"{100 * (gain - 1):+.0f}% on {letter}"
                                  for letter, gain in compile_gain.items()),
        allocator_gain=f"{100 * (allocator_gain.min() - 1):.0f}-{100 * (allocator_gain.max() - 1):.0f}%",
        faults_usual=", ".join(f"{n:,.0f} at {size}" for size, n in faults["baseline"].items()),
        faults_default=", ".join(f"{n:,.0f} at batch size {size}"
                                 for size, n in faults["+auto_precision"].items()),
        faults_kept=(f"at most {kept:,.0f} page faults per step" if kept
                     else "no page fault in any step of any run"))
    # the machines by letter (named in the text), rates without decimals, "–" for a figure a
    # record lacks (older records have no sweep, --quick ones no compile)
    rates = [column for column in bench if column.endswith(("/s)", "(MiB)"))]
    styled = (bench.set_index(["machine", "date (UTC)"]).style.format(precision=2, na_rep="–")
              .format("{:.0f}", subset=rates, na_rep="–"))
    return styled, values


def compile_run() -> str:
    """The last torch.compile record (``benchmarks/compile_run.py``) as one sentence."""
    runs = benchmark_records("compile")   # a fresh environment (Colab) has none
    if not runs:
        return "(No record of it here.)"
    last = runs[-1]
    eager, compiled = (last[name]["seconds_per_epoch"] for name in ("eager", "compiled"))
    projected = last["projected_20_epochs_s"]
    return (f"On {last['processor']}, the first compiled epoch took {compiled[0]:.0f} s against "
            f"{eager[0]:.0f} s eager (the compilation), the later ones "
            f"{sum(compiled[1:]) / len(compiled[1:]):.1f} s against {sum(eager[1:]) / len(eager[1:]):.1f} s: "
            f"a 20-epoch run would take {projected['compiled'] / 60:.1f} minutes compiled and "
            f"{projected['eager'] / 60:.1f} eager, so the {last['faster']} run is faster.")


def parts_table(profile: str | None = None) -> tuple[object, dict[str, str]]:
    """Each part's models and training hours (:func:`part_times`)
    with the wall time of the reproduce calls that trained it, styled, and the values quoted."""
    parts = part_times(profile)   # each model once, in the first part that shows it
    walls = wall_times(profile)   # the reproduce calls that trained each part, if recorded
    parts["wall minutes (reproduce)"] = walls["minutes"] if len(walls) else None
    made = {"smoothness": "probe runs", "shift": "shift tables"}   # the parts that keep no models
    return parts.style.format(precision=2, na_rep="–"), {
        "reproduce_hours": f"{parts.loc['all', 'hours']:.1f}",
        "reproduce_models": f"{parts.loc['all', 'models']}",
        "wall_note": "; ".join(
            f"{part}: {row['minutes']:.0f} minutes for {row['trained']} of its "
            f"{row['trained'] + row['found']} {made.get(part, 'models')} "
            f"on {row['where']} ({row['date']})" for part, row in walls.iterrows())
        or "none has been recorded with these results"}


def precision(profile: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """The precision part: batch norm (seed 0) trained in fp32 and in bf16, and the fp32
    run against the bf16 seeds' mean (judged with their noise); the table and the values."""
    runs = {p: run(book_config("batch", profile, precision=p), profile=profile)
            for p in ("fp32", "bf16")}
    table = accuracy_table(runs.values())
    table.insert(0, "precision", [r.info["precision"] for r in runs.values()])
    bf16_seeds = run_each([book_config("batch", profile, seed=s) for s in BOOK_SEEDS], profile=profile)
    fp32 = verdicts.against_noise([100 * runs["fp32"].test_accuracy],
                                  accuracies(bf16_seeds)["BatchNorm"], *run_to_run_noise(bf16_seeds),
                                  "The fp32 run", f"the mean of the {len(bf16_seeds)} bf16 seeds")
    return (table.set_index("precision").drop(columns=["seed", "parameters", "seconds per epoch",
                                                       "seconds"]),
            {"precision_sentence": fp32.sentence(), "precision_low": f"{fp32.low:.2f}",
             "precision_high": f"{fp32.high:.2f}", "bf16_seed_count": str(len(bf16_seeds))})


def chapter(profile: str | None = None) -> ChapterFacts:
    """What the chapter on reproducing the book shows (tables ``main``, ``benchmarks``,
    ``parts``, ``precision``), with the momentum that OneCycle cycles."""
    momentum = make_optimizer(Net(), book_config("batch", profile), steps=100)[0].param_groups[0]
    values = {"momentum_cycle": f"{momentum['max_momentum']} to {momentum['base_momentum']}"}
    tables = {}
    for name, (table, quoted) in (("main", main_timings(profile)), ("benchmarks", benchmarks()),
                                  ("parts", parts_table(profile)), ("precision", precision(profile))):
        tables[name] = table
        values |= quoted
    values["compile_run"] = compile_run()
    return ChapterFacts(values, tables)
