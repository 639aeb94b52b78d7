"""The book's verdicts: every "beyond the noise" and "holds" is a test from
:mod:`scipy.stats`, turned into an English sentence here.

Inputs are test accuracies (or errors) in percent, one per training run; differences are
in points. Tests are two-sided at the level :data:`ALPHA`; intervals have
:data:`CONFIDENCE`.

- :func:`welch`: two groups of runs (seeds), unequal variances (Welch's t test).
- :func:`paired`: the same runs measured two ways, such as a single view and flip
  averaging on the same weights (paired t test).
- :func:`against_noise`: groups too small to estimate their own noise (single runs),
  judged with the run-to-run standard deviation of repeated runs (:func:`pooled_sd`): the
  difference of two single runs spreads ``sqrt(2)`` times as much as one run.
- :func:`small_batch_cost`: Wu and He's small-batch finding, as a test.
- :func:`all_pairs`, :func:`pairs_beyond`, :func:`moves`, :func:`standing`,
  :func:`listing`, :func:`times`: the phrases built on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

#: Two-sided level of every test: a difference with a p-value below it is beyond the noise.
ALPHA = 0.05
#: Confidence of every interval.
CONFIDENCE = 1 - ALPHA


@dataclass(frozen=True)
class Difference:
    """``a - b`` (points), its confidence interval (``low``, ``high``), the two-sided
    p-value, and the test that gave them; ``a`` and ``b`` name what was compared.

    Raises:
        ValueError: a difference or bound that is not finite, an interval of no width or
            not around the difference, a p-value outside [0, 1] (or NaN): the tests give
            such numbers only for degenerate input, which no sentence can describe.
    """

    a: str
    b: str
    difference: float
    low: float
    high: float
    p_value: float
    test: str

    def __post_init__(self):
        for name in ("difference", "low", "high", "p_value"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not (math.isfinite(self.low) and math.isfinite(self.high)
                and self.low <= self.difference <= self.high and self.low < self.high
                and 0 <= self.p_value <= 1):
            raise ValueError(f"{self.a} vs {self.b}: a difference needs finite numbers, an "
                             f"interval of some width around it and a p-value in [0, 1], got "
                             f"{self.difference} ({self.low} to {self.high}), p = "
                             f"{self.p_value}: is the input degenerate?")

    @property
    def beyond_noise(self) -> bool:
        """Whether the difference is beyond the noise (p-value below :data:`ALPHA`)."""
        return self.p_value < ALPHA

    def evidence(self) -> str:
        """The numbers in parentheses, e.g. ``"95% interval 0.21 to 0.77 points, Welch's
        t test, p = 0.004"``."""
        return (f"{CONFIDENCE:.0%} interval {self.low:.2f} to {self.high:.2f} points, "
                f"{self.test}, {_p(self.p_value)}")

    def amount(self) -> str:
        """``"0.49 points above"``, ``"0.49 points below"`` or ``"level with"``."""
        return _amount(self.difference)

    def verdict(self) -> str:
        """``"beyond the noise"`` or ``"within the noise"``."""
        return "beyond the noise" if self.beyond_noise else "within the noise"

    def sentence(self) -> str:
        """One sentence, e.g. ``"BatchNorm is 0.49 points above GroupNorm (95% interval
        0.21 to 0.77 points, Welch's t test, p = 0.004): beyond the noise."``"""
        sentence = f"{self.a} is {self.amount()} {self.b} ({self.evidence()}): {self.verdict()}."
        return sentence[0].upper() + sentence[1:]

    def short(self) -> str:
        """``"BatchNorm vs GroupNorm (+0.49 points, p = 0.004)"``."""
        return f"{self.a} vs {self.b} ({self.difference:+.2f} points, {_p(self.p_value)})"


def _amount(difference: float) -> str:
    """``"0.49 points above"``, ``"0.49 points below"`` or ``"level with"``."""
    if round(difference, 2) == 0:
        return "level with"
    return f"{abs(difference):.2f} points {'above' if difference > 0 else 'below'}"


def _p(p: float) -> str:
    """``"p < 0.001"``, ``"p = 0.00412"``, ``"p = 0.0496"``, ``"p = 0.31"``: three
    significant digits below 0.1, so that a p-value never rounds across the 5% level."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}" if p < 0.1 else f"p = {p:.2f}"


def _values(values: Sequence[float], name: str, at_least: int) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) < at_least or not np.isfinite(array).all():
        raise ValueError(f"{name} needs at least {at_least} finite values (one per run), "
                         f"got {list(values)}.")
    return array


def _varies(values: np.ndarray, what: str, test: str) -> None:
    """Raise ValueError if every one of ``values`` (``what`` says what they are) is the
    same: ``test`` has no noise to judge by (its p-value is NaN, its interval of no width)."""
    if np.ptp(values) == 0:
        raise ValueError(f"{test} needs runs that vary: {what} {values[0]:g} in every run, so "
                         f"there is no noise to judge the difference by. Give the values "
                         f"without a verdict, or runs that differ (other seeds).")


def welch(a: Sequence[float], b: Sequence[float], a_name: str = "a",
          b_name: str = "b") -> Difference:
    """Mean of ``a`` minus mean of ``b`` by Welch's t test (``scipy.stats.ttest_ind`` with
    ``equal_var=False``): independent runs, at least two on each side.

    Raises:
        ValueError: fewer than two finite values on a side, or no variation on either.
    """
    a, b = _values(a, a_name, 2), _values(b, b_name, 2)
    if np.ptp(a) == 0:
        _varies(b, f"{a_name} is {a[0]:g} and {b_name} is", "Welch's t test")
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return Difference(a_name, b_name, a.mean() - b.mean(), interval.low, interval.high,
                      result.pvalue, "Welch's t test")


def paired(a: Sequence[float], b: Sequence[float], a_name: str = "a",
           b_name: str = "b") -> Difference:
    """Mean of ``a - b`` by the paired t test (``scipy.stats.ttest_rel``): ``a[i]`` and
    ``b[i]`` measure the same run two ways (the same weights, or the same seed).

    Raises:
        ValueError: unequal lengths, fewer than two pairs, or the same ``a - b`` in all.
    """
    a, b = _values(a, a_name, 2), _values(b, b_name, 2)
    if len(a) != len(b):
        raise ValueError(f"A paired test needs one {b_name} per {a_name}, got {len(a)} and "
                         f"{len(b)} values.")
    _varies(a - b, f"{a_name} minus {b_name} is", "The paired t test")
    result = stats.ttest_rel(a, b)
    interval = result.confidence_interval(CONFIDENCE)
    return Difference(a_name, b_name, (a - b).mean(), interval.low, interval.high,
                      result.pvalue, "paired t test")


def paired_sentence(a: Sequence[float], b: Sequence[float], a_name: str = "a",
                    b_name: str = "b") -> str:
    """The sentence of :func:`paired` (:meth:`Difference.sentence`); where ``a - b`` is the
    same in every pair, which leaves no noise to judge by, a sentence that gives the
    difference and says so, without a verdict ("BatchNorm flip-averaged is level with
    single view in each of the 3 runs: no noise to judge it by.").

    Raises:
        ValueError: as :func:`paired`, but for the same ``a - b`` in all pairs.
    """
    a_, b_ = _values(a, a_name, 2), _values(b, b_name, 2)
    if len(a_) == len(b_) and np.ptp(a_ - b_) == 0:
        sentence = (f"{a_name} is {_amount((a_ - b_)[0])} {b_name} in each of the {len(a_)} "
                    f"runs: no noise to judge it by.")
        return sentence[0].upper() + sentence[1:]
    return paired(a, b, a_name, b_name).sentence()


def pooled_sd(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """Run-to-run standard deviation (points) pooled over ``groups`` of repeated runs (each
    the same configuration, different seeds), and its degrees of freedom
    ``sum(n_i - 1)``: ``sqrt(sum((n_i - 1) * s_i**2) / sum(n_i - 1))``.

    Raises:
        ValueError: no group with two runs or more, or a value that is not finite.
    """
    groups = [np.asarray(g, dtype=float) for g in groups]
    if not all(np.isfinite(g).all() for g in groups):
        raise ValueError(f"The noise needs finite values (one per run), got "
                         f"{[list(g) for g in groups]}.")
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df < 1:
        raise ValueError("The noise needs repeated runs: at least one group of two or more.")
    sum_of_squares = sum(((g - g.mean()) ** 2).sum() for g in groups if len(g) > 1)
    return math.sqrt(sum_of_squares / df), df


def against_noise(a: Sequence[float], b: Sequence[float], sd: float, df: int,
                  a_name: str = "a", b_name: str = "b") -> Difference:
    """Mean of ``a`` minus mean of ``b`` judged with a known run-to-run standard deviation
    ``sd`` (points) estimated with ``df`` degrees of freedom (:func:`pooled_sd`): the
    standard error is ``sd * sqrt(1/n_a + 1/n_b)`` (``sqrt(2) * sd`` for two single runs),
    the test Student's t with ``df`` degrees of freedom (``scipy.stats.t``).

    Raises:
        ValueError: an empty side, or ``sd`` not positive and finite, or ``df`` below 1.
    """
    a, b = _values(a, a_name, 1), _values(b, b_name, 1)
    return t_test(a.mean() - b.mean(), sd * math.sqrt(1 / len(a) + 1 / len(b)), df,
                  a_name, b_name)


def t_test(difference: float, se: float, df: int, a_name: str = "a",
           b_name: str = "b") -> Difference:
    """A ``difference`` (points) with standard error ``se`` whose noise was estimated with
    ``df`` degrees of freedom, judged by Student's t (``scipy.stats.t``).

    Raises:
        ValueError: ``se`` not positive and finite, ``df`` below 1, or ``difference`` not
            finite.
    """
    if not (0 < se < math.inf and df >= 1 and math.isfinite(difference)):
        raise ValueError(f"The noise needs a finite, positive standard deviation and at least "
                         f"one degree of freedom, and the difference a finite value, got a "
                         f"difference of {difference}, a standard error of {se} and df={df}.")
    half_width = stats.t.ppf(1 - ALPHA / 2, df) * se
    p_value = 2 * stats.t.sf(abs(difference) / se, df)
    return Difference(a_name, b_name, difference, difference - half_width,
                      difference + half_width, p_value,
                      f"t test against the seeds' noise with {df} degrees of freedom")


@dataclass(frozen=True)
class SmallBatchCost:
    """Wu and He's small-batch finding (2018, Figure 1), tested on single runs of a sweep:
    ``batch`` and ``group`` are each norm's test error at the small batch size minus at the
    reference batch size (points; :func:`small_batch_cost`), ``gap`` batch norm's rise
    minus group norm's. The finding holds when batch norm's rise and the gap are both
    positive and beyond the noise."""

    batch: Difference
    group: Difference
    gap: Difference

    @property
    def holds(self) -> bool:
        return all(d.beyond_noise and d.difference > 0 for d in (self.batch, self.gap))

    def sentence(self) -> str:
        """E.g. ``"Wu and He's finding holds here. From batch size 128 to 2, batch norm's
        test error changes by +6.10 points (...), beyond the noise; group norm's by +0.40
        points (...), within the noise; batch norm's change is 5.70 points above group
        norm's, beyond the noise (...)."``"""
        def change(d):
            return f"by {d.difference:+.2f} points ({d.evidence()}), {d.verdict()}"

        sizes = self._sizes()
        return (f"Wu and He's finding {'holds' if self.holds else 'does not hold'} here. "
                f"{sizes[0].upper() + sizes[1:]}, batch norm's test error changes "
                f"{change(self.batch)}; group norm's {change(self.group)}; batch norm's change "
                f"is {self.gap.amount()} group norm's, {self.gap.verdict()} "
                f"({self.gap.evidence()}).")

    def _sizes(self) -> str:
        """``"from batch size 128 to 2"``, read off the rises' names."""
        return f"from {self.batch.b} to {self.batch.a.removeprefix('batch size ')}"

    def short(self) -> str:
        """The verdict without the intervals, e.g. ``"Wu and He's finding holds here:
        from batch size 128 to 2, batch norm's test error rises 9.09 points (beyond the
        noise), group norm's falls 1.77 (within the noise)."``"""
        def rise(d):
            return f"{'rises' if d.difference >= 0 else 'falls'} {abs(d.difference):.2f}"

        return (f"Wu and He's finding {'holds' if self.holds else 'does not hold'} here: "
                f"{self._sizes()}, batch norm's test error {rise(self.batch)} points "
                f"({self.batch.verdict()}), group norm's {rise(self.group)} "
                f"({self.group.verdict()}).")


def small_batch_cost(error: Mapping[str, Mapping[int, float]], small: int, reference: int,
                     sd: float, df: int) -> SmallBatchCost:
    """:class:`SmallBatchCost` from single runs: ``error[norm][batch_size]`` is the test
    error (percent) of ``"batch"`` and ``"group"`` norm at batch sizes ``small`` and
    ``reference``; ``sd`` and ``df`` are the run-to-run noise (:func:`pooled_sd`). Each
    rise is the difference of two single runs (standard error ``sqrt(2) * sd``), the gap
    the difference of two rises (``2 * sd``).

    Raises:
        KeyError: a norm or batch size missing from ``error``.
    """
    rises = {norm: against_noise([error[norm][small]], [error[norm][reference]], sd, df,
                                 f"batch size {small}", f"batch size {reference}")
             for norm in ("batch", "group")}
    gap = t_test(rises["batch"].difference - rises["group"].difference, 2 * sd, df,
                 "batch norm's rise", "group norm's")
    return SmallBatchCost(rises["batch"], rises["group"], gap)


def all_pairs(groups: Mapping[str, Sequence[float]],
              test: Callable[..., Difference] = welch) -> list[Difference]:
    """``test`` on every pair of ``groups`` (name -> accuracies), in the mapping's order."""
    return [test(groups[a], groups[b], a, b) for a, b in combinations(groups, 2)]


def signed(points: float, digits: int = 1) -> str:
    """A difference with its sign, ``"+1.2"`` or ``"-0.3"``; ``"0.0"`` where it rounds to
    zero (never ``"-0.0"``).

    Raises:
        ValueError: ``points`` not a finite number.
    """
    if not math.isfinite(points):
        raise ValueError(f"A difference must be a finite number of points, got {points}.")
    rounded = round(points, digits) + 0.0    # + 0.0 turns -0.0 into 0.0
    return f"{rounded:.{digits}f}" if rounded == 0 else f"{rounded:+.{digits}f}"


def listing(items: Sequence[str], empty: str = "none") -> str:
    """``"A"``, ``"A and B"``, ``"A, B and C"``; ``empty`` for no items."""
    items = list(items)
    if not items:
        return empty
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def pairs_beyond(differences: Sequence[Difference], empty: str = "no pair") -> str:
    """The differences beyond the noise, as ``"BatchNorm vs GroupNorm (+0.49 points,
    p = 0.004)"`` joined by :func:`listing`, or ``empty``."""
    return listing([d.short() for d in differences if d.beyond_noise], empty)


def _by_direction(named: Sequence[tuple[str, Difference]],
                  words: Mapping[str, str]) -> str:
    """One clause: for each direction of ``words`` (``"up"``, ``"down"``, ``"within"``: beyond
    the noise and positive, beyond and negative, within the noise), in its order, its word
    and the names whose difference goes that way, e.g. ``"falls beyond the noise for A and
    B and stays within the noise for C"``; directions no name goes are left out."""
    goes = {"up": lambda d: d.beyond_noise and d.difference > 0,
            "down": lambda d: d.beyond_noise and d.difference < 0,
            "within": lambda d: not d.beyond_noise}
    return listing([f"{word} {listing(names)}" for direction, word in words.items()
                    if (names := [name for name, d in named if goes[direction](d)])])


def moves(differences: Mapping[str, Difference], what: str = "the test accuracy") -> str:
    """How ``what`` moves, by name, as one clause: e.g. ``"the test accuracy falls beyond
    the noise for BatchNorm and LayerNorm and stays within the noise for GroupNorm"``.

    Raises:
        ValueError: no differences.
    """
    if not differences:
        raise ValueError("moves needs at least one difference to describe.")
    return f"{what} " + _by_direction(list(differences.items()), {
        "down": "falls beyond the noise for", "up": "rises beyond the noise for",
        "within": "stays within the noise for"})


def standing(differences: Sequence[Difference]) -> str:
    """Where one thing stands against others, from its differences to each (``a`` the same
    in all), as one clause: e.g. ``"ahead of LayerNorm, behind InstanceNorm and within the
    noise of GroupNorm"``.

    Raises:
        ValueError: no differences, or differences that do not share their ``a``.
    """
    if len({d.a for d in differences}) != 1:
        raise ValueError("standing needs differences of one thing (the same a) to others; "
                         f"got a = {sorted({d.a for d in differences})}.")
    return _by_direction([(d.b, d) for d in differences], {
        "up": "ahead of", "down": "behind", "within": "within the noise of"})


def times(ratio: float, tolerance: float = 0.05) -> str:
    """A ratio of durations as English: ``"about as long as"`` within ``tolerance``,
    ``"1.3 times as long as"`` above it, ``"23% less time than"`` below it (``"less than 1%
    of the time of"`` where that would read 100%).

    Raises:
        ValueError: a ratio that is not a positive number.
    """
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"A ratio of durations must be a positive number, got {ratio}.")
    if abs(ratio - 1) <= tolerance:
        return "about as long as"
    if ratio > 1:
        return f"{ratio:.1f} times as long as"
    less = f"{1 - ratio:.0%}"
    return "less than 1% of the time of" if less == "100%" else f"{less} less time than"
