"""A/B statistics: real differences found and sized, A/A tests significant at most as
often as alpha says (small and zero counts included), and a verdict that says when there is
too little data to decide."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from streamrec.engine.serving.experiment_stats import (
    MIN_CONVERTERS,
    MIN_USERS_PER_ARM,
    compare,
    sample_ratio_p,
)


def test_a_sample_ratio_mismatch_is_detected():
    assert sample_ratio_p([5000, 5050], [0.5, 0.5]) > 0.1
    assert sample_ratio_p([5000, 5600], [0.5, 0.5]) < 0.001
    assert sample_ratio_p([8000, 2000], [0.8, 0.2]) > 0.1


def _arm(rng: np.random.Generator, users: int, rate: float, lists: int = 10):
    trials = np.full(users, lists)
    return rng.binomial(trials, rate), trials


def test_a_real_difference_is_found_and_sized():
    rng = np.random.default_rng(1)
    a = _arm(rng, 5000, 0.10)
    b = _arm(rng, 5000, 0.12)
    result = compare("CTR", ("A", *a), ("B", *b))
    assert result.p_value < 0.001
    assert result.rates[0] == pytest.approx(0.10, abs=0.005)
    assert result.lift == pytest.approx(0.2, abs=0.05)
    assert result.lift_ci[0] < result.lift < result.lift_ci[1]
    assert result.verdict.startswith("B raises CTR by ")
    assert result.verdict.endswith("significant.")
    # The z-test's p-value is the textbook one.
    x1, n1, x2, n2 = a[0].sum(), a[1].sum(), b[0].sum(), b[1].sum()
    pooled = (x1 + x2) / (n1 + n2)
    z = (x2 / n2 - x1 / n1) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert result.p_two_proportion == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert result.p_bootstrap == 0.0  # no resample of 2000 crossed zero: p < 1/2000


def test_the_bootstrap_p_value_tracks_the_one_over_users():
    rng = np.random.default_rng(5)
    gaps = []
    for _ in range(30):
        r = compare("CTR", ("A", *_users(rng, 400)), ("B", *_users(rng, 400)), bootstrap=1000)
        gaps.append(abs(r.p_value - r.p_bootstrap))
    assert np.mean(gaps) < 0.04
    assert max(gaps) < 0.12


def test_too_little_data_says_how_many_more_users_are_needed():
    rng = np.random.default_rng(2)
    result = compare("CTR", ("A", *_arm(rng, 200, 0.10)), ("B", *_arm(rng, 200, 0.105)))
    assert result.p_value > 0.05
    assert result.users_needed is not None
    assert result.users_needed > 200
    assert result.verdict.startswith("Not enough data yet")
    assert "more users needed" in result.verdict


def test_a_broken_split_is_reported_before_any_effect():
    rng = np.random.default_rng(3)
    result = compare("CTR", ("A", *_arm(rng, 5000, 0.1)), ("B", *_arm(rng, 6000, 0.2)))
    assert result.verdict.startswith("Sample ratio mismatch")


def _users(rng: np.random.Generator, users: int):
    """Users who differ: their own click rate (beta) and their own number of lists."""
    rates = rng.beta(0.5, 4.5, size=users)  # mean 0.1, very uneven
    lists = rng.integers(1, 60, size=users)
    return rng.binomial(lists, rates), lists


def test_a_a_tests_are_significant_about_as_often_as_alpha_says():
    rng = np.random.default_rng(4)
    hits = naive = 0
    seeds = 400
    for _ in range(seeds):
        result = compare("CTR", ("A", *_users(rng, 400)), ("A2", *_users(rng, 400)), bootstrap=10)
        hits += result.p_value < 0.05
        naive += result.p_two_proportion < 0.05
    # 5% expected; a binomial(400, 0.05) stays within 2.5%..8.5% with >99% probability.
    assert 0.025 <= hits / seeds <= 0.085
    # Treating each list as an independent trial would cry wolf far more often.
    assert naive / seeds > 0.15


def _one_list_each(successes: int, users: int):
    """``users`` users with one list each, the first ``successes`` of them converting."""
    return (np.arange(users) < successes).astype(np.int64), np.ones(users, dtype=np.int64)


def test_a_zero_success_arm_on_a_handful_of_lists_is_too_little_data_not_significant():
    """Reported from outside: A 3 clicks on 20 lists, B 0 on 23 was called "B lowers CTR
    by 100.0% ± 0.0% against A, significant" (delta-method p 0.029); Fisher's exact test
    says p = 0.09."""
    result = compare("CTR", ("A", *_one_list_each(3, 20)), ("B", *_one_list_each(0, 23)))
    assert result.counts == (3, 20, 0, 23)
    assert result.p_exact == pytest.approx(stats.fisher_exact([[3, 17], [0, 23]]).pvalue)
    assert result.p_exact == pytest.approx(0.092, abs=0.001)
    assert result.p_value > 0.05  # the arm without a click keeps a variance
    assert not result.enough
    assert not result.significant
    assert "significant" not in result.verdict
    assert result.verdict.startswith("Not enough data yet to decide on CTR: A 3/20, B 0/23")
    assert f"at least {MIN_USERS_PER_ARM} users per arm" in result.verdict
    assert f"{MIN_CONVERTERS} users who converted" in result.verdict
    # The lift's interval has a width, and a -100% lift does not exclude no change.
    low, high = result.lift_ci
    assert low <= result.lift == -1.0 < 0 < high


def test_one_heavy_user_is_not_enough_evidence():
    """One A user clicks 10 of 20 lists; nobody else clicks. The delta method over users
    alone said p 0.01; one user is one piece of evidence."""
    clicks = np.zeros(12, dtype=np.int64)
    lists = np.ones(12, dtype=np.int64)
    heavy = (np.r_[10, clicks[1:]], np.r_[20, lists[1:]])
    result = compare("CTR", ("A", *heavy), ("B", clicks, lists))
    assert not result.significant
    assert result.verdict.startswith("Not enough data yet to decide")


def test_a_zero_success_arm_with_plenty_of_evidence_is_significant_with_a_real_interval():
    result = compare("CTR", ("A", *_one_list_each(30, 150)), ("B", *_one_list_each(0, 150)))
    assert result.enough
    assert result.p_exact < 1e-6
    assert result.significant
    low, high = result.lift_ci
    assert low <= -1.0 < high < -0.5  # width > 0: not the bootstrap's collapsed point
    assert result.verdict.startswith("B lowers CTR by 100.0% against A (95% CI -100.0% .. ")
    assert result.verdict.endswith(", significant.")


def test_a_control_without_successes_is_compared_without_a_lift():
    result = compare("CTR", ("A", *_one_list_each(0, 150)), ("B", *_one_list_each(30, 150)))
    assert np.isnan(result.lift)
    assert result.significant
    assert result.verdict == "B raises CTR against A, which had none, significant."


def test_more_successes_than_trials_use_the_exact_test_of_two_rates():
    """A user may click two items of one list: the exact test is then the conditional
    binomial test of two Poisson rates."""
    a = (np.full(20, 3, dtype=np.int64), np.ones(20, dtype=np.int64))
    b = (np.full(20, 1, dtype=np.int64), np.ones(20, dtype=np.int64))
    result = compare("CTR", ("A", *a), ("B", *b))
    assert result.p_exact == pytest.approx(stats.binomtest(20, 80, 0.5).pvalue)
    assert result.significant


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 6), st.floats(0, 1)), min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(1, 6), st.floats(0, 1)), min_size=1, max_size=40),
)
def test_significant_only_with_enough_users_and_both_tests_agreeing(arm_a, arm_b):
    def arm(users):
        lists = np.asarray([n for n, _ in users], dtype=np.int64)
        return np.asarray([int(n * f) for n, f in users], dtype=np.int64), lists

    result = compare("CTR", ("A", *arm(arm_a)), ("B", *arm(arm_b)), bootstrap=50)
    if result.significant:
        assert result.enough
        assert result.p_exact < 0.05
        assert result.p_value < 0.05
        assert result.verdict.endswith("significant.")
    else:
        assert not result.verdict.endswith(", significant.")
    if not result.enough and result.srm_p >= 0.001:
        assert result.verdict.startswith("Not enough data yet to decide")
    low, high = result.lift_ci
    assert high > low  # never a zero-width interval, zero-success arms included


def test_small_a_a_tests_at_low_rates_are_called_significant_at_most_alpha_of_the_time():
    """Few users, one to three lists each, 10% CTR: an arm often has no click at all."""
    rng = np.random.default_rng(6)
    runs = 400
    significant = zero_arm = 0
    for _ in range(runs):
        users = rng.integers(10, 40, size=2)
        arms = []
        for m in users:
            lists = rng.integers(1, 4, size=m)
            arms.append((rng.binomial(lists, 0.1), lists))
        result = compare("CTR", ("A", *arms[0]), ("B", *arms[1]), bootstrap=10)
        significant += result.significant
        zero_arm += 0 in (result.counts[0], result.counts[2])
    assert zero_arm > 0
    assert significant / runs <= 0.05
