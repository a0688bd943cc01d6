"""The lab's comparison statistics against scipy and against simulation.

The oracle for the interval is scipy's one-sample t test on the differences (for an
equivalence, scipy's two one-sided t tests against the margins); the sequential
procedure's promises (coverage, the error rate across looks, the
power at the reported detectable effect) are checked by simulating many studies
with a known truth.  Simulation tolerances are 4 binomial standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from optimlab.lab.stats import SAME, detectable, equivalence, paired_interval, sequential

TRIALS = 4000


def _within(rate: float, expected: float, trials: int = TRIALS) -> bool:
    return abs(rate - expected) <= 4 * math.sqrt(expected * (1 - expected) / trials)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_the_interval_is_scipys_t_interval(n):
    d = np.random.default_rng(n).normal(0.3, 2.0, n)
    ours = paired_interval(d, 0.95)
    theirs = scipy_stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert ours.mean == pytest.approx(d.mean(), rel=1e-12)
    assert (ours.lo, ours.hi) == pytest.approx((theirs.low, theirs.high), rel=1e-10)


def test_one_seed_has_no_interval_and_equal_differences_decide_at_once():
    assert math.isinf(paired_interval([1.0], 0.95).hi)
    decision = sequential([-3.0] * 5, (5,), 0.95)
    assert decision.better == "a" and decision.interval.lo == decision.interval.hi == -3.0
    nothing = sequential([0.0] * 5, (5,), 0.95)
    assert not nothing.decided and nothing.detectable == 0.0


def test_the_interval_covers_the_truth_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(TRIALS):
        iv = paired_interval(rng.normal(1.5, 3.0, 5), 0.95)
        covered += iv.lo <= 1.5 <= iv.hi
    assert _within(covered / TRIALS, 0.95)


def test_looking_three_times_keeps_false_decisions_below_5_percent():
    """No true difference: the sequence of looks decides wrongly at most 5 % of the time."""
    rng = np.random.default_rng(1)
    wrong = sum(
        sequential(rng.normal(0.0, 1.0, 15), (5, 10, 15), 0.95).decided for _ in range(TRIALS)
    )
    rate = wrong / TRIALS
    assert rate <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / TRIALS)
    assert rate > 0.01  # and the looks are not pointlessly strict (Bonferroni: about 3-4 %)


def test_a_true_effect_of_the_detectable_size_is_found_about_80_percent_of_the_time():
    n, alpha, sigma = 10, 0.05, 1.0
    effect = detectable(sigma, n, alpha)
    rng = np.random.default_rng(2)
    found = sum(
        sequential(rng.normal(-effect, sigma, n), (n,), 1 - alpha).better == "a"
        for _ in range(TRIALS)
    )
    # the formula is the usual normal-theory one with s for sigma: about 78-80 % at n = 10
    assert 0.74 <= found / TRIALS <= 0.84


def test_sequential_stops_at_the_first_look_that_decides():
    d = [-5.0, -5.2, -4.9, -5.1, -5.0] + [9.0] * 10  # decided at 5: later seeds are not read
    decision = sequential(d, (5, 10, 15), 0.95)
    assert decision.look == 0 and decision.better == "a" and decision.final
    early = sequential([0.1, -0.2, 0.3], (5, 10), 0.95)
    assert early is None  # not enough seeds for the first look yet
    partial = sequential([0.1, -0.3, 0.2, -0.1, 0.05, 0.0, 0.1], (5, 10), 0.95)
    assert partial.look == 0 and not partial.final and partial.detectable is None


def _tost(d, margin: float, alpha: float) -> str | None:
    """Two one-sided tests by scipy: SAME if both reject at ``alpha``, "b" / "a" if the
    difference is beyond the margin on that side, None otherwise."""
    above = scipy_stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    below = scipy_stats.ttest_1samp(d, margin, alternative="less").pvalue
    if above < alpha and below < alpha:
        return SAME
    if scipy_stats.ttest_1samp(d, margin, alternative="greater").pvalue < alpha:
        return "b"
    if scipy_stats.ttest_1samp(d, -margin, alternative="less").pvalue < alpha:
        return "a"
    return None


@pytest.mark.parametrize(
    ("mean", "sd", "margin", "expected"),
    [
        (0.0, 0.05, 0.2, SAME),  # well inside
        (0.18, 0.05, 0.2, None),  # the interval reaches past +margin
        (0.5, 0.05, 0.2, "b"),  # a is worse by more than the margin
        (-0.5, 0.05, 0.2, "a"),  # a is better by more than the margin
        (0.0, 0.5, 0.2, None),  # too noisy to say
    ],
)
def test_equivalence_is_two_one_sided_t_tests(mean, sd, margin, expected):
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 1.0, 8)
    d = mean + sd * (z - z.mean()) / z.std(ddof=1)  # exactly this mean and sd
    decision = equivalence(list(d), (8,), 0.95, lambda n: margin)
    assert decision.better == expected == _tost(d, margin, 0.05)
    assert decision.margin == margin
    assert (decision.detectable is None) == (expected is not None)


def test_equivalence_looks_split_alpha_and_read_the_margin_of_their_seeds():
    d = [0.05, -0.04, 0.06, -0.05, 0.0, 0.01, -0.01, 0.02, -0.02, 0.0]
    margins = []

    def margin(n):
        margins.append(n)
        return 0.05

    decision = equivalence(d, (5, 10), 0.95, margin)
    assert margins == [5, 10] and decision.look == 1  # undecided after 5, decided after 10
    assert decision.better == _tost(np.array(d), 0.05, 0.025) == SAME
    assert _tost(np.array(d[:5]), 0.05, 0.025) is None
    identical = equivalence([0.0] * 5, (5,), 0.95, lambda n: 0.01)
    assert identical.better == SAME and identical.interval.lo == identical.interval.hi == 0.0


def test_equivalence_within_the_margin_is_declared_wrongly_at_most_5_percent_of_the_time():
    """A true difference exactly at the margin: "the same" at most 5 % of the time, over
    three looks."""
    rng = np.random.default_rng(3)
    wrong = sum(
        equivalence(rng.normal(0.5, 1.0, 15), (5, 10, 15), 0.95, lambda n: 0.5).better == SAME
        for _ in range(TRIALS)
    )
    assert wrong / TRIALS <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / TRIALS)
