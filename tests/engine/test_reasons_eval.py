"""The reasons evaluation (benchmarks/reasons_eval.py) on a tiny replay of the synthetic
shop: template sentences are all faithful, the metrics are in range, and the LM path
judges raw answers before and after the guard (with a scripted backend, no model)."""

from __future__ import annotations

import doctest
import importlib.util
import math
import sys
from pathlib import Path

import pytest

import streamrec.engine.reasons.metrics as metrics
from streamrec.engine.reasons import Guard, Prompt, ReasonParams
from streamrec.engine.reasons.metrics import distinct_n, percentile, text_stats, tokens
from streamrec.engine.serving.catalog import catalog_items
from streamrec.engine.serving.item_stats import ItemStatsCounter, TrendParams
from streamrec.engine.serving.recommender import RankingParams
from streamrec.engine.types import Item
from tests import shop

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "reasons_eval", ROOT / "benchmarks" / "reasons_eval.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture(scope="module")
def items() -> list[Item]:
    return catalog_items(shop.catalog())


@pytest.fixture(scope="module")
def guard(items) -> Guard:
    return Guard([i.title for i in items], {i.category for i in items})


@pytest.fixture(scope="module")
def loaded(script, tmp_path_factory):
    """The shop's trained model and index, as the script loads them."""
    return script.load_model(shop.train(tmp_path_factory.mktemp("shop")).model_dir)


@pytest.fixture(scope="module")
def replayed(script, items, loaded):
    model, index = loaded
    recommenders = script.build_recommenders(model, index, items, RankingParams(k=10))
    events = shop.events(users=40, per_user=12, seed=3)
    before, replay_events = script.event_slice(events, 300, 120)
    counter = ItemStatsCounter(TrendParams(half_life_s=3600.0, top_n=20, min_count=2.0))
    replayed = script.replay(
        recommenders, before, replay_events, history_length=50, stats=counter, co_limit=50
    )
    # Every stored event, warm-up included, is counted into the item statistics.
    assert set(counter.scores) == {e.item_id for e in [*before, *replay_events]}
    # users starting from an empty history
    fresh = script.replay(recommenders, [], replay_events[:5], history_length=50)
    return replayed, fresh


def test_the_replay_publishes_one_full_list_per_event(replayed):
    replay, _ = replayed
    assert replay.events == 120
    assert replay.warmup_events == 300
    assert len(replay.lists) == 120
    for published in replay.lists:
        assert len(published.items) == 10
        assert len(published.zh_texts) == 10
        assert published.rank_seconds > 0


@pytest.mark.parametrize("language", ["en", "zh"])
def test_template_sentences_are_all_faithful_and_the_metrics_are_in_range(
    script, replayed, guard, language
):
    replay, fresh = replayed
    report = script.evaluate_templates(replay.lists + fresh.lists, language, guard)
    assert report["sentences"] == 10 * (len(replay.lists) + len(fresh.lists))
    assert report["faithfulness"] == 1.0, report["rejected_examples"]
    assert report["false_claims"] == 0
    assert 0.99 <= report["guard_pass"] <= 1.0  # only generic phrasings may be ungrounded
    assert set(report["rejections_by_kind"]) <= {"ungrounded", "uncited"}
    assert 0.0 < report["specificity"] <= 1.0
    assert set(report["reason_codes"]) <= {
        "similar_to_recent",
        "category_affinity",
        "tag_affinity",
        "new_arrival",
        "popular",
        "trending",
        "bought_together",
        "viewed_together",
    }
    assert set(report["faithful_by_code"]) == set(report["reason_codes"])
    assert all(rate == 1.0 for rate in report["faithful_by_code"].values())
    text = report["text"]
    for key in ("distinct_1", "distinct_2", "distinct_2_within_list", "unique_share"):
        assert 0.0 < text[key] <= 1.0, key
    assert 5 < text["mean_chars"] <= text["p95_chars"] <= 160
    assert report["lists_with_a_repeated_sentence"] == 0
    over = report["overhead_per_list"]
    assert over["n"] == len(replay.lists) + len(fresh.lists)
    assert 0 < over["p50_ms"] <= over["p99_ms"] < 1000
    assert report["examples"]


def test_every_cited_item_is_at_least_the_floor_close_to_its_recommendation(
    script, replayed, loaded
):
    replay, _ = replayed
    found = script.cited_similarity(loaded[0], replay.lists)
    assert found["citations"] > 100
    assert found["cited_min"] >= ReasonParams().min_similarity
    assert found["cited"][0.01] <= found["cited"][0.5] <= 1.0 + 1e-9
    assert -1.0 <= found["random_pairs"][0.5] <= found["random_pairs"][0.99] <= 1.0
    assert "citations): min" in script._similarity_line(found)


class ScriptedModel:
    """Answers the template sentence for odd calls and a lie for even ones; every third
    call raises."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompt: Prompt, timeout_s: float) -> str | None:
        self.calls += 1
        if self.calls % 3 == 0:
            msg = "backend down"
            raise RuntimeError(msg)
        if self.calls % 2 == 0:
            return "Trending now: bought together by 99 other shoppers at www.example.com"
        return prompt.user.rsplit("Example of an acceptable sentence: ", 1)[1].split("\n")[0]


def test_the_lm_path_is_judged_before_and_after_the_guard(script, replayed, guard):
    replay, _ = replayed
    picked = [replay.lists[i] for i in script.sample_lists(replay.lists, 3)]
    model = ScriptedModel()
    report = script.evaluate_lm(picked, model, guard, call_timeout_s=5, list_budget_s=60)
    assert report["lists"] == 3
    assert report["sentences"] == 30
    assert report["model_calls"] == model.calls
    before, after = report["before_guard"], report["after_guard"]
    assert 0.0 < before["guard_pass"] < 1.0
    assert {"claim", "number", "url"} <= set(before["rejections_by_kind"])
    assert after["faithfulness"] == 1.0
    assert 0.0 < report["model_written_share"] < 1.0
    cold = report["outcomes_cold"]
    assert sum(cold.values()) == 30
    assert cold["fallback_guard"] > 0
    assert cold["fallback_error"] > 0
    assert cold["generated"] > 0
    cache = report["outcomes_cache_pass"]  # nothing calls the model again
    assert cache["generated"] == cache["fallback_error"] == 0
    assert cache["cached"] >= cold["generated"] + cold["cached"]
    assert cache["fallback_guard"] >= 1
    assert cache["fallback_timeout"] >= 1
    assert report["no_text_by_cause"] == {"RuntimeError": cold["fallback_error"]}
    assert report["overhead_per_list_cache"]["n"] == 3
    assert report["examples_accepted"]
    assert report["examples_rejected"]
    md = script.to_markdown(_result(script, replay, guard, report))
    assert "raw answers (before the guard)" in md
    assert "published (after the guard)" in md


def test_cache_keys_count_signatures_and_prompts(script, replayed):
    replay, _ = replayed
    keys = script.cache_keys(replay.lists, "en")
    assert keys["sentences"] == 10 * len(replay.lists)
    assert 1 <= keys["distinct_prompts"] <= keys["distinct_signatures"] <= keys["sentences"]


def test_the_lm_phase_stops_starting_lists_after_its_time_limit(script, replayed, guard):
    replay, _ = replayed
    report = script.evaluate_lm(replay.lists[:5], ScriptedModel(), guard, time_limit_s=0.0)
    assert report["lists"] == 1
    assert report["lists_asked"] == 5


def test_a_missing_model_dir_names_the_commands_that_make_one(script, tmp_path):
    with pytest.raises(script.SetupError, match="streamrec train --dataset ml-100k"):
        script.load_model(tmp_path)
    assert script.main(["--model-dir", str(tmp_path), "--no-lm"]) == 1


def test_the_help_describes_the_script(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--lm-lists" in capsys.readouterr().out


def _result(script, replay, guard, lm):
    return {
        "stamp": "test",
        "command": "python benchmarks/reasons_eval.py",
        "machine": script.machine(),
        "load_start": "0",
        "load_end": "0",
        "model_dir": "m",
        "model_version": "v",
        "catalog_items": 100,
        "k": 10,
        "offset": 300,
        "replay": {"events": 120, "warmup_events": 300, "duplicates": 0, "unknown_items": 0},
        "rank_per_list": {"p50_ms": 1.0, "p99_ms": 2.0},
        "lists_citing_one_set": 0.5,
        "cache_keys": script.cache_keys(replay.lists, "en"),
        "templates": [script.evaluate_templates(replay.lists, "en", guard)],
        "lm": {**lm, "backend": "scripted"},
    }


# -- the pure metrics -----------------------------------------------------------------------


def test_metrics_docstring_examples_hold():
    assert doctest.testmod(metrics, optionflags=doctest.ELLIPSIS).failed == 0


def test_distinct_n_counts_unique_ngrams_over_all_sentences():
    assert distinct_n(["a b c", "a b d"], 1, "en") == 4 / 6
    assert distinct_n(["a b c", "a b d"], 2, "en") == 3 / 4
    assert distinct_n(["a"], 2, "en") == 0.0
    assert distinct_n(["你好你好"], 1, "zh") == 0.5
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(["a"], 0, "en")


def test_chinese_is_counted_in_characters_and_english_in_words():
    assert tokens("Because you viewed 《Heat》", "en") == ["because", "you", "viewed", "heat"]
    assert tokens("因为 你", "zh") == ["因", "为", "你"]


def test_text_stats_and_percentiles():
    stats = text_stats(["ab", "ab", "abcd"], "en")
    assert stats.sentences == 3
    assert stats.unique_share == 2 / 3
    assert stats.mean_chars == pytest.approx(8 / 3)
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([1.0, 2.0], 100) == 2.0
    assert math.isnan(percentile([], 50))
    assert math.isnan(text_stats([], "en").mean_chars)


def test_within_list_diversity_is_averaged_over_lists_and_specificity_counts_codes():
    assert metrics.distinct_within([["a b", "a b"], ["c d e"]], 2, "en") == 0.75
    assert math.isnan(metrics.distinct_within([], 2, "en"))
    assert metrics.specificity(["popular", "similar_to_recent"]) == 0.5
    assert metrics.specificity([]) == 0.0
