"""The verdict module: known cases, every phrase in a sentence, refusals."""

import math
from dataclasses import replace

import numpy as np
import pytest

from scipy import stats

from normlab.book.verdicts import (Difference, against_noise, all_pairs, listing, moves, paired,
                                   paired_sentence,
                                   pairs_beyond, pooled_sd, signed, small_batch_cost, standing,
                                   times, welch)


def around(mean, sd):
    """Three runs with this mean and sample standard deviation (ddof=1)."""
    return [mean - sd, mean, mean + sd]


# The book's first comparison on the JPEG copy (three seeds each): BN 81.52 +- 0.18,
# GN 81.03 +- 0.14. "Twice the largest standard deviation" (0.36) called it noise; the
# standard error of the difference, sqrt(0.18**2/3 + 0.14**2/3) = 0.13, does not.
BATCH, GROUP = around(81.52, 0.18), around(81.03, 0.14)


def test_welch_finds_the_batch_norm_lead_over_group_norm_beyond_the_noise():
    d = welch(BATCH, GROUP, "BatchNorm", "GroupNorm")
    se = math.sqrt(0.18 ** 2 / 3 + 0.14 ** 2 / 3)
    assert d.difference == pytest.approx(0.49)
    assert (d.high - d.low) / 2 > 2 * se                      # t, not z, with ~4 df
    assert d.low > 0 and d.beyond_noise and d.p_value < 0.05
    assert d.sentence().startswith("BatchNorm is 0.49 points above GroupNorm (95% interval ")
    assert d.sentence().endswith("Welch's t test, p = 0.0227): beyond the noise.")


def test_welch_calls_overlapping_seeds_noise():
    d = welch(around(81.06, 0.51), GROUP, "LayerNorm", "GroupNorm")
    assert not d.beyond_noise and d.low < 0 < d.high
    assert d.sentence().endswith("within the noise.")
    assert "0.03 points above GroupNorm" in d.sentence()


def test_two_single_runs_spread_sqrt_two_times_one_run():
    # With the noise known exactly (df huge), a difference of 1.96 * sqrt(2) * sd between
    # two single runs sits right at the 5 % level of the normal distribution.
    d = against_noise([1.96 * math.sqrt(2)], [0.0], sd=1.0, df=10 ** 7)
    assert d.p_value == pytest.approx(0.05, abs=1e-3)
    assert (d.high - d.low) / 2 == pytest.approx(1.96 * math.sqrt(2), rel=1e-3)
    # The ablations' case: -2.72 points for one run against one, run-to-run sd 1.1 (6 df)
    # is not beyond the noise, though it exceeds 2 sd = 2.2.
    ablation = against_noise([78.0 - 2.72], [78.0], sd=1.1, df=6, a_name="Peak lr x2",
                             b_name="the recipe")
    assert not ablation.beyond_noise
    assert ablation.sentence().startswith("Peak lr x2 is 2.72 points below the recipe (")
    assert "6 degrees of freedom" in ablation.sentence()
    # A mean over three seeds against one run: the standard error shrinks accordingly.
    assert against_noise([1.0], [0.0, 0.0, 0.0], 1.0, 6).high - 1.0 < (
        against_noise([1.0], [0.0], 1.0, 6).high - 1.0)


def test_a_paired_test_sees_a_consistent_gain_that_welch_cannot():
    rng = np.random.default_rng(0)
    single = 81 + rng.normal(0, 0.5, 5)
    flipped = single + 0.1 + rng.normal(0, 0.02, 5)
    assert paired(flipped, single, "flip-averaged", "single view").beyond_noise
    assert not welch(flipped, single).beyond_noise
    assert "paired t test" in paired(flipped, single).sentence()


def test_pooled_sd_weights_each_group_by_its_degrees_of_freedom():
    sd, df = pooled_sd([[1.0, 3.0], [2.0, 4.0, 6.0], [5.0]])
    assert df == 3
    assert sd == pytest.approx(math.sqrt((2 + 8) / 3))


def test_every_phrase_reads_as_english():
    level = Difference("A", "B", 0.001, -0.5, 0.5, 0.9, "Welch's t test")
    below = Difference("A", "B", -1.234, -2.0, -0.5, 0.0004, "paired t test")
    assert level.sentence() == ("A is level with B (95% interval -0.50 to 0.50 points, "
                                "Welch's t test, p = 0.90): within the noise.")
    near = Difference("A", "B", 1.0, 0.01, 2.0, 0.0496, "t")
    assert near.short().endswith("p = 0.0496)") and near.beyond_noise
    assert Difference("A", "B", 1.0, -0.01, 2.0, 0.0504, "t").short().endswith("p = 0.0504)")
    assert below.sentence() == ("A is 1.23 points below B (95% interval -2.00 to -0.50 "
                                "points, paired t test, p < 0.001): beyond the noise.")
    assert below.short() == "A vs B (-1.23 points, p < 0.001)"
    lower = Difference("no norm's error", "B", 1.0, 0.5, 1.5, 0.01, "t")
    assert lower.sentence().startswith("No norm's error is 1.00 points above B")
    assert listing([]) == "none" and listing([], "no change") == "no change"
    assert listing(["A"]) == "A" and listing(["A", "B"]) == "A and B"
    assert listing(["A", "B", "C"]) == "A, B and C"
    assert pairs_beyond([level]) == "no pair"
    assert pairs_beyond([level, below]) == "A vs B (-1.23 points, p < 0.001)"
    rise = Difference("A", "B", 2.0, 1.0, 3.0, 0.01, "t")
    assert moves({"BatchNorm": below, "LayerNorm": rise, "GroupNorm": level}) == (
        "the test accuracy falls beyond the noise for BatchNorm, rises beyond the noise for "
        "LayerNorm and stays within the noise for GroupNorm")
    assert moves({"BatchNorm": below, "GroupNorm": below}, "the error") == (
        "the error falls beyond the noise for BatchNorm and GroupNorm")
    assert moves({"BatchNorm": level}) == "the test accuracy stays within the noise for BatchNorm"
    ahead, behind = (Difference("A", b, d, d - 0.5, d + 0.5, 0.01, "t")
                     for b, d in (("B", 1.0), ("C", -1.0)))
    assert "A is " + standing([ahead, behind, replace(level, b="D")]) == (
        "A is ahead of B, behind C and within the noise of D")
    assert "A is " + standing([level, replace(level, b="C")]) == (
        "A is within the noise of B and C")
    assert "A is " + standing([ahead, replace(ahead, b="C")]) == "A is ahead of B and C"
    assert times(1.02) == "about as long as"
    assert times(1.34) == "1.3 times as long as"
    assert times(0.77) == "23% less time than"
    assert times(1e-9) == times(0.004) == "less than 1% of the time of"
    assert times(0.01) == "99% less time than"


def test_all_pairs_follow_the_order_of_the_groups():
    pairs = all_pairs({"BatchNorm": BATCH, "LayerNorm": around(81.06, 0.51),
                       "GroupNorm": GROUP})
    assert [(d.a, d.b) for d in pairs] == [("BatchNorm", "LayerNorm"),
                                           ("BatchNorm", "GroupNorm"),
                                           ("LayerNorm", "GroupNorm")]
    assert pairs_beyond(pairs).startswith("BatchNorm vs GroupNorm (+0.49 points, p = 0.02")


@pytest.mark.parametrize("call, message", [
    (lambda: welch([81.0], [80.0, 80.5]), "at least 2 finite values"),
    (lambda: welch([81.0, float("nan")], [80.0, 80.5]), "at least 2 finite values"),
    (lambda: paired([1.0, 2.0, 3.0], [1.0, 2.0]), "one b per a"),
    (lambda: against_noise([1.0], [0.0], sd=0.0, df=3), "positive standard deviation"),
    (lambda: pooled_sd([[1.0], [2.0]]), "repeated runs"),
    (lambda: times(0.0), "positive number"),
    # degenerate input: never "p = nan", "+nan" or an interval of -inf to inf in the prose
    (lambda: welch([81.0, 81.0, 81.0], [81.0, 81.0]), "runs that vary: a is 81 and b is 81 in every run"),
    (lambda: welch([81.0, 81.0], [80.0, 80.0]), "runs that vary: a is 81 and b is 80 in every run"),
    (lambda: paired([1.0, 2.0, 3.0], [0.5, 1.5, 2.5]), "runs that vary: a minus b is 0.5 in every run"),
    (lambda: against_noise([1.0], [0.0], sd=math.inf, df=3), "finite, positive standard deviation"),
    (lambda: against_noise([1.0], [0.0], sd=math.nan, df=3), "finite, positive standard deviation"),
    (lambda: pooled_sd([[1.0, float("nan")], [2.0, 3.0]]), "finite values"),
    (lambda: signed(float("nan")), "finite number"),
    (lambda: signed(math.inf), "finite number"),
    (lambda: Difference("A", "B", 1.0, 1.0, 1.0, 0.0, "t"), "interval of some width"),
    (lambda: Difference("A", "B", 0.0, 0.0, 0.0, float("nan"), "t"), "p-value in"),
    (lambda: Difference("A", "B", 1.0, -math.inf, math.inf, 1.0, "t"), "finite numbers"),
    (lambda: moves({}), "at least one difference"),
    (lambda: standing([]), "differences of one thing"),
    (lambda: standing([Difference("A", "B", 1, 0, 2, 0.01, "t"),
                       Difference("C", "B", 1, 0, 2, 0.01, "t")]), "differences of one thing"),
])
def test_bad_input_is_refused_with_what_to_do(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_small_batch_cost_holds_only_when_batch_norm_rises_beyond_the_noise_and_group_norm():
    holds = small_batch_cost({"batch": {2: 30.0, 128: 22.0}, "group": {2: 24.0, 128: 23.5}},
                             2, 128, sd=0.5, df=6)
    assert holds.holds and holds.batch.difference == pytest.approx(8.0)
    assert holds.gap.difference == pytest.approx(7.5)
    assert holds.gap.high - holds.gap.difference == pytest.approx(
        2 * 0.5 * stats.t.ppf(0.975, 6))                       # two rises: se = 2 sd
    assert holds.sentence().startswith(
        "Wu and He's finding holds here. From batch size 128 to 2, batch norm's test error "
        "changes by +8.00 points (")
    assert holds.short() == ("Wu and He's finding holds here: from batch size 128 to 2, batch "
                             "norm's test error rises 8.00 points (beyond the noise), group "
                             "norm's rises 0.50 (within the noise).")
    both = small_batch_cost({"batch": {2: 30.0, 128: 22.0}, "group": {2: 29.5, 128: 22.0}},
                            2, 128, sd=0.5, df=6)
    assert not both.holds                                      # both rise alike
    assert "batch norm's change is 0.50 points above group norm's, within the noise" in (
        both.sentence())
    falls = small_batch_cost({"batch": {2: 21.5, 128: 22.0}, "group": {2: 23.0, 128: 23.5}},
                             2, 128, sd=0.5, df=6)
    assert not falls.holds and "test error changes by -0.50 points" in falls.sentence()
    assert "; group norm's by -0.50 points (" in falls.sentence()
    assert "is level with group norm's" in falls.sentence()


def test_signed_differences_never_read_minus_zero():
    assert [signed(x) for x in (1.24, -0.26, -0.04, 0.04, 0.0)] == ["+1.2", "-0.3", "0.0", "0.0", "0.0"]
    assert signed(-0.004, 2) == "0.00" and signed(0.126, 2) == "+0.13"


def test_a_paired_sentence_says_when_the_runs_leave_no_noise_to_judge_by():
    assert paired_sentence([10.0, 12.0], [10.0, 12.0], "BatchNorm flip-averaged", "single view") == (
        "BatchNorm flip-averaged is level with single view in each of the 2 runs: no noise to "
        "judge it by.")
    assert paired_sentence([1.5, 2.5, 3.5], [1.0, 2.0, 3.0]).startswith(
        "A is 0.50 points above b in each of the 3 runs")
    varied = ([84.1, 84.5, 84.2], [83.9, 84.0, 84.1])
    assert paired_sentence(*varied) == paired(*varied).sentence()
    with pytest.raises(ValueError, match="one b per a"):
        paired_sentence([1.0, 2.0, 3.0], [1.0, 2.0])
