"""Experiments: definitions, the file's checks and assignment."""

from __future__ import annotations

import pytest
from scipy import stats

from streamrec.engine.serving.experiments import (
    HOLDOUT,
    Experiment,
    ExperimentConfigError,
    Variant,
    assign,
    load_experiments,
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
        (
            FILE.replace("diversity_weight", "diversity"),
            "cannot override 'diversity'; did you mean 'diversity_weight'?",
        ),
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


# Tried from outside: it started and hot-reloaded without a word, and both arms served
# the same 10-item lists with no holdout.
PROBE = """
[[experiment]]
name = "probe4"
holdot = 0.1                 # typo for holdout
[[experiment.variant]]
name = "A"
share = 0.5
[[experiment.variant]]
name = "B"
share = 0.5
num_recommendations = 4      # an override in the wrong place
"""


def test_a_misspelt_experiment_key_is_refused_naming_it_and_the_closest_valid_one():
    with pytest.raises(
        ExperimentConfigError,
        match=r"probe\.toml, experiment 'probe4': unknown key 'holdot'; did you mean 'holdout'\?",
    ):
        load_experiments(PROBE, "probe.toml")


def test_an_override_outside_overrides_is_refused_saying_where_it_belongs():
    fixed_holdout = PROBE.replace("holdot", "holdout")
    with pytest.raises(
        ExperimentConfigError,
        match=r"experiment 'probe4', variant 'B': unknown key 'num_recommendations'; it is an "
        r"override: put it under overrides = \{ num_recommendations = \.\.\. \}",
    ):
        load_experiments(fixed_holdout)
    moved = fixed_holdout.replace(
        "num_recommendations = 4", "overrides = { num_recommendations = 4 }"
    )
    [probe] = load_experiments(moved)
    assert probe.holdout == 0.1
    assert probe.variant("B").overrides == {"num_recommendations": 4}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (  # the top level knows only [[experiment]]
            '[[experiments]]\nname = "x"\n',
            r"top level: unknown key 'experiments'; did you mean 'experiment'\?",
        ),
        (
            'holdout = 0.1\n[[experiment]]\nname = "x"\n',
            r"top level: unknown key 'holdout'; it belongs to an experiment \(\[\[experiment\]\]",
        ),
        (
            FILE.replace("holdout = 0.1", "holdout = 0.1\nshare = 0.5"),
            r"experiment 'diversity': unknown key 'share'; it belongs to a variant",
        ),
        (
            FILE.replace("holdout = 0.1", "holdout = 0.1\ndiversity_weight = 0.2"),
            r"experiment 'diversity': unknown key 'diversity_weight'; it is an override: put "
            r"it under a variant's overrides",
        ),
        (
            FILE.replace("holdout = 0.1", "hold_out = 0.1"),
            r"experiment 'diversity': unknown key 'hold_out'; did you mean 'holdout'\?",
        ),
        (
            FILE.replace("holdout = 0.1", "owner = 'ana'"),
            r"unknown key 'owner'; an experiment takes name, holdout, variant",
        ),
        (
            FILE.replace("share = 0.8", "shares = 0.8"),
            r"experiment 'list-length', variant 'ten': unknown key 'shares'; did you mean "
            r"'share'\?",
        ),
        (
            FILE.replace("overrides = { num_recommendations = 20 }", "override = { k = 1 }"),
            r"variant 'twenty': unknown key 'override'; did you mean 'overrides'\?",
        ),
        (
            FILE.replace("overrides = { diversity_weight = 0.3 }", "diversity_wieght = 0.3"),
            r"variant 'B': unknown key 'diversity_wieght'; did you mean the override "
            r"'diversity_weight'",
        ),
        ("experiment = 3\n", "experiment must be an array of tables"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(text, complaint):
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


def test_experiment_definitions_are_checked_when_built_in_code_too():
    with pytest.raises(ExperimentConfigError, match="shares"):
        Experiment("x", (Variant("A", 0.7), Variant("B", 0.7)))
