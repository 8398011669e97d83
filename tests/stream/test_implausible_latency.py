"""One event with a ``ts`` in seconds must not spoil the latency histograms: latencies that
cannot be real are counted by reason and kept out of them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from streamrec.engine.serving.catalog import Catalog
from streamrec.engine.serving.recommender import Recommender
from streamrec.index.faiss_index import FaissItemIndex
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings
from streamrec.stream.worker.metrics import (
    CLOCK_SKEW_S,
    MAX_PLAUSIBLE_LATENCY_S,
    Metrics,
    implausible_latency,
)
from streamrec.stream.worker.pipeline import BatchResult, Pipeline

NOW_MS = 1_800_000_000_000  # the worker's clock, epoch milliseconds
HISTOGRAM = "streamrec_event_to_publish_seconds"
EXPERIMENT_HISTOGRAM = "streamrec_experiment_event_to_publish_seconds"
COUNTER = "streamrec_implausible_latency_total"


@pytest.mark.parametrize(
    ("latency_s", "reason"),
    [
        (0.0, None),
        (0.012, None),
        (-CLOCK_SKEW_S, None),  # the producer's clock a little ahead: skew, observed as 0
        (MAX_PLAUSIBLE_LATENCY_S, None),
        (-CLOCK_SKEW_S - 0.001, "negative"),
        ((NOW_MS - NOW_MS * 1000) / 1000, "negative"),  # ts in microseconds
        (MAX_PLAUSIBLE_LATENCY_S + 1, "over_a_day"),
        ((NOW_MS - NOW_MS // 1000) / 1000, "over_a_day"),  # ts in seconds: ~1.8e9 s
    ],
)
def test_a_latency_is_implausible_when_negative_beyond_skew_or_over_a_day(latency_s, reason):
    assert implausible_latency(latency_s) == reason


def test_implausible_latencies_are_counted_by_reason_not_observed():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for reason in ("negative", "over_a_day"):  # both series exist before the first one
        assert registry.get_sample_value(COUNTER, {"reason": reason}) == 0.0

    assert metrics.observe_event_to_publish(0.020) is True
    assert metrics.observe_event_to_publish(-0.2) is True  # clock skew
    assert metrics.observe_event_to_publish(1.8e9) is False
    assert metrics.observe_event_to_publish(-3600.0) is False

    assert registry.get_sample_value(f"{HISTOGRAM}_count") == 2
    assert registry.get_sample_value(f"{HISTOGRAM}_sum") == pytest.approx(0.020)
    assert registry.get_sample_value(COUNTER, {"reason": "over_a_day"}) == 1
    assert registry.get_sample_value(COUNTER, {"reason": "negative"}) == 1


def test_the_counter_help_says_what_it_counts_and_where_they_are_not():
    registry = CollectorRegistry()
    Metrics(registry)
    [family] = [f for f in registry.collect() if f.name == "streamrec_implausible_latency"]
    for words in ("negative", "over_a_day", "seconds instead of", HISTOGRAM, EXPERIMENT_HISTOGRAM):
        assert words in family.documentation


@pytest.fixture
def pipeline(shop_model) -> Iterator[Pipeline]:
    """A pipeline on the shop model whose clock reads NOW_MS; publishing latencies never
    touches Redis, so the store is never connected."""
    settings = Settings(model_dir=shop_model.model_dir, metrics_port=0)
    index = FaissItemIndex.load(shop_model.model_dir / "index")
    recommender = Recommender(shop_model.model, index, Catalog())
    store = RedisStore.from_url(
        "redis://127.0.0.1:1/0", history_length=10, dedupe_ttl_s=60, recommendation_ttl_s=60
    )
    made = Pipeline(
        settings, recommender, store, Metrics(CollectorRegistry()), clock=lambda: NOW_MS
    )
    yield made
    asyncio.run(made.close())
    asyncio.run(store.close())


def test_one_event_with_ts_in_seconds_leaves_the_histograms_sums_true(pipeline):
    registry = pipeline.metrics.registry
    sent = [NOW_MS - 30, NOW_MS // 1000, NOW_MS - 10, NOW_MS * 1000]  # ok, s, ok, µs
    result = BatchResult(
        recommendations=[],
        event_ts=sent,
        experiment="ab",
        variants=["a", "a", "b", None],
    )
    pipeline.record_published(result)

    assert registry.get_sample_value(f"{HISTOGRAM}_count") == 2
    assert registry.get_sample_value(f"{HISTOGRAM}_sum") == pytest.approx(0.040)
    assert registry.get_sample_value(COUNTER, {"reason": "over_a_day"}) == 1
    assert registry.get_sample_value(COUNTER, {"reason": "negative"}) == 1
    # The experiment's histogram (and its stored latency) leaves them out as well.
    by_arm = {
        arm: registry.get_sample_value(
            f"{EXPERIMENT_HISTOGRAM}_count", {"experiment": "ab", "variant": arm}
        )
        for arm in ("a", "b")
    }
    assert by_arm == {"a": 1, "b": 1}
