"""Experiments: definitions, assignment and the statistics that judge them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from streamrec.engine.serving.experiments import (
    HOLDOUT,
    Experiment,
    ExperimentConfigError,
    Variant,
    assign,
    compare,
    load_experiments,
    sample_ratio_p,
)

KEY = b"experiment-key"
FILE = """
[[experiment]]
name = "diversity"
holdout = 0.1
[[experiment.variant]]
name = "A"
share = 0.5
[[experiment.variant]]
name = "B"
share = 0.5
overrides = { diversity_weight = 0.3 }

[[experiment]]
name = "list-length"
[[experiment.variant]]
name = "ten"
share = 0.8
[[experiment.variant]]
name = "twenty"
share = 0.2
overrides = { num_recommendations = 20 }
"""


def test_an_experiments_file_loads_with_its_variants_and_overrides():
    diversity, length = load_experiments(FILE)
    assert diversity.holdout == 0.1
    assert diversity.variant("B").overrides == {"diversity_weight": 0.3}  # type: ignore[union-attr]
    assert [v.share for v in length.variants] == [0.8, 0.2]


def test_a_variant_may_change_the_model_sources_weights_and_reasons():
    every = FILE.replace(
        "diversity_weight = 0.3",
        'model_dir = "models/next", candidate_sources = ["ann", "trending"], '
        'ranking_weights = { score = 1.0, from_trending = 0.5 }, reason_generator = "lm", '
        'reason_language = "zh"',
    )
    variant = load_experiments(every)[0].variant("B")
    assert variant is not None
    assert variant.overrides["model_dir"] == "models/next"
    assert variant.overrides["candidate_sources"] == ["ann", "trending"]
    assert variant.overrides["ranking_weights"] == {"score": 1.0, "from_trending": 0.5}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[[experiment]]\nname = 'x'\n[[experiment.variant]]\nname='A'\nshare=1.0\n", "two"),
        (FILE.replace("share = 0.2", "share = 0.3"), "sum to 1"),
        (FILE.replace("diversity_weight", "learning_rate"), "cannot override"),
        (FILE.replace("= 20", '= "20"'), "num_recommendations must be an integer"),
        (FILE.replace("= 0.3", "= 1.5"), r"diversity_weight must be a number in \[0, 1\]"),
        (
            FILE.replace("diversity_weight = 0.3", 'candidate_sources = ["ann", "psychic"]'),
            "candidate_sources must be a non-empty list of ann, cooccurrence",
        ),
        (
            FILE.replace("diversity_weight = 0.3", "ranking_weights = { charm = 1.0 }"),
            "ranking_weights must be a table of ranker feature",
        ),
        (FILE.replace("diversity_weight = 0.3", 'reason_generator = "gpt"'), "reason_generator"),
        (FILE.replace('name = "B"', 'name = "A"'), "unique"),
        (FILE.replace("holdout = 0.1", "holdout = 1.0"), "holdout"),
        ("[[experiment]]\nname = ", "not valid TOML"),
        ("[[experiment]]\nname = 'x'\n", "missing"),
    ],
)
def test_experiments_that_cannot_run_are_refused_with_the_reason(text, complaint):
    with pytest.raises(ExperimentConfigError, match=complaint):
        load_experiments(text)


def test_assignment_is_deterministic_sticky_and_independent_of_other_experiments():
    diversity, length = load_experiments(FILE)
    users = [f"user-{n}" for n in range(2000)]
    first = [assign(diversity, u, KEY) for u in users]
    assert first == [assign(diversity, u, KEY) for u in users]  # every worker agrees
    other = [assign(length, u, KEY) for u in users]
    # Being in B of one experiment says nothing about the other.
    in_b = [o for f, o in zip(first, other, strict=True) if f == "B"]
    assert abs(in_b.count("twenty") / len(in_b) - 0.2) < 0.05
    # Another key, another assignment.
    assert first != [assign(diversity, u, b"another-key") for u in users]


def test_assignment_is_uniform_over_the_shares_with_the_holdout_apart():
    diversity, length = load_experiments(FILE)
    users = [f"u{n}" for n in range(100_000)]
    arms = [assign(diversity, u, KEY) for u in users]
    counts = [arms.count(HOLDOUT), arms.count("A"), arms.count("B")]
    assert stats.chisquare(counts, [10_000, 45_000, 45_000]).pvalue > 0.001
    skewed = [assign(length, u, KEY) for u in users[:50_000]]
    assert (
        stats.chisquare([skewed.count("ten"), skewed.count("twenty")], [40_000, 10_000]).pvalue
        > 0.001
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


def test_experiment_definitions_are_checked_when_built_in_code_too():
    with pytest.raises(ExperimentConfigError, match="shares"):
        Experiment("x", (Variant("A", 0.7), Variant("B", 0.7)))
