"""Prometheus metrics of the worker. Pass a registry; tests use a fresh one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: Longest event-to-publish latency taken as real. Longer ones come from a ``ts`` in
#: seconds instead of milliseconds (1.8e9 s), or a log replayed with its own old ``ts``.
MAX_PLAUSIBLE_LATENCY_S = 24 * 3600.0
#: How far an event's ``ts`` may be ahead of the worker's clock and still count as clock
#: skew between the producer's machine and the worker's (observed as 0 s).
CLOCK_SKEW_S = 1.0


def implausible_latency(latency_s: float) -> str | None:
    """Why an event-to-publish latency cannot be real, or None when it can.

    ``"negative"``: the event's ``ts`` is more than :data:`CLOCK_SKEW_S` after its list
    was published (a ``ts`` in microseconds, or a clock far ahead); ``"over_a_day"``: more
    than :data:`MAX_PLAUSIBLE_LATENCY_S`.
    """
    if latency_s < -CLOCK_SKEW_S:
        return "negative"
    if latency_s > MAX_PLAUSIBLE_LATENCY_S:
        return "over_a_day"
    return None


class Metrics:
    """Every metric the worker exports (names are part of the dashboard contract)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reason_outcomes = Counter(
            "streamrec_reason_outcomes",
            "Reason sentences by how they were written: generated, cached, fallback_timeout, "
            "fallback_error, fallback_guard (language-model reasons only).",
            ["outcome"],
            registry=registry,
        )
        self.events_consumed = Counter(
            "streamrec_events_consumed",
            "Valid events consumed, by type.",
            ["type"],
            registry=registry,
        )
        self.recommendations_published = Counter(
            "streamrec_recommendations_published",
            "Recommendation lists published.",
            registry=registry,
        )
        self.dlq_events = Counter(
            "streamrec_dlq_events",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.duplicate_events = Counter(
            "streamrec_duplicate_events",
            "Events already applied (replays), not re-applied.",
            registry=registry,
        )
        self.superseded_events = Counter(
            "streamrec_superseded_events",
            "Events applied but not ranked: a later event of the same user in the batch got "
            "the list (STREAMREC_PUBLISH=latest_per_user).",
            registry=registry,
        )
        self.replayed_lists = Counter(
            "streamrec_replayed_lists",
            "What an already-applied event published: republish (its stored list's bytes), "
            "skip (a later list of the user went out), rank or rank_only (no list of it was "
            "stored: ranked and published).",
            ["outcome"],
            registry=registry,
        )
        self.forgotten_events = Counter(
            "streamrec_forgotten_events",
            "Events ignored because their user asked to be forgotten after them.",
            registry=registry,
        )
        self.control_requests = Counter(
            "streamrec_control_requests",
            "Operator requests carried out from the control topic, by type.",
            ["type"],
            registry=registry,
        )
        self.event_to_publish = Histogram(
            "streamrec_event_to_publish_seconds",
            "From the event's ts to its recommendation being acknowledged by Kafka.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.implausible_latency = Counter(
            "streamrec_implausible_latency",
            "Published lists whose event-to-publish latency cannot be real, by reason: "
            "negative (the event's ts more than 1 s after the publish: a ts in "
            "microseconds, or a clock far ahead) or over_a_day (a ts in seconds instead of "
            "milliseconds, or a log replayed with its own ts). They are counted here and "
            "kept out of streamrec_event_to_publish_seconds and "
            "streamrec_experiment_event_to_publish_seconds.",
            ["reason"],
            registry=registry,
        )
        for reason in ("negative", "over_a_day"):
            self.implausible_latency.labels(reason=reason)  # both series exist from the start
        self.retrieval = Histogram(
            "streamrec_retrieval_seconds",
            "Ranking time per micro-batch (index search included).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "streamrec_batch_size",
            "Events per micro-batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )
        self.index_items = Gauge(
            "streamrec_index_items", "Items in the candidate index.", registry=registry
        )
        self.catalog_ready = Gauge(
            "streamrec_catalog_ready",
            "1 once the worker has read the items topic up to its end offsets at start (it "
            "processes events only then), 0 while it reads.",
            registry=registry,
        )
        self.catalog_restore_remaining = Gauge(
            "streamrec_catalog_restore_remaining",
            "Offsets of the items topic still to read before the worker processes events.",
            registry=registry,
        )
        self.index_reloads = Counter(
            "streamrec_index_reloads",
            "Rebuilt indexes found in the index folder, by outcome (swapped, rejected).",
            ["outcome"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "streamrec_redis_errors",
            "Redis operations that failed and were retried, by op.",
            ["op"],
            registry=registry,
        )
        self.item_stats_errors = Counter(
            "streamrec_item_stats_errors",
            "Item-statistics updates (op=update, per event) or reads (op=read, per batch) "
            "that failed and were skipped; the events themselves were applied and ranked.",
            ["op"],
            registry=registry,
        )
        self.items_updated = Counter(
            "streamrec_items_updated",
            "Catalog changes applied, by action.",
            ["action"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "streamrec_consumer_lag",
            "Events waiting in the events topic for this worker, by partition: the partition's "
            "end offset minus the next offset to process (0: caught up).",
            ["partition"],
            registry=registry,
        )
        self.experiment_lists = Counter(
            "streamrec_experiment_lists",
            "Lists served under the running experiment, by variant (holdout included).",
            ["experiment", "variant"],
            registry=registry,
        )
        self.experiment_actions = Counter(
            "streamrec_experiment_actions",
            "Clicks, add-to-carts and purchases attributed to recommended lists, by "
            "experiment variant and attribution (id: the event carries "
            "context.recommendation_id; window: the item was recommended to the user within "
            "STREAMREC_ATTRIBUTION_WINDOW_S).",
            ["experiment", "variant", "type", "attribution"],
            registry=registry,
        )
        self.experiment_items = Counter(
            "streamrec_experiment_items",
            "Items recommended under the running experiment, by variant.",
            ["experiment", "variant"],
            registry=registry,
        )
        self.experiment_reason_fallbacks = Counter(
            "streamrec_experiment_reason_fallbacks",
            "Recommended items whose reason fell back: the generic popularity reason, or a "
            "template sentence where the arm's language model gave none. Divide by "
            "streamrec_experiment_items_total for the rate.",
            ["experiment", "variant"],
            registry=registry,
        )
        self.experiment_latency = Histogram(
            "streamrec_experiment_event_to_publish_seconds",
            "Event timestamp to recommendation acked by Kafka, by experiment variant.",
            ["experiment", "variant"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.experiment_coverage = Gauge(
            "streamrec_experiment_coverage",
            "Distinct items an arm has recommended since the experiment started, as a share "
            "of the indexed catalog (refreshed every STREAMREC_EXPERIMENT_REFRESH_S).",
            ["experiment", "variant"],
            registry=registry,
        )
        self.experiment_reloads = Counter(
            "streamrec_experiment_reloads",
            "Changes of STREAMREC_EXPERIMENTS_FILE seen by the worker, by outcome "
            "(applied, or rejected: the previous experiment keeps running).",
            ["outcome"],
            registry=registry,
        )
        self.model_info = Gauge(
            "streamrec_model_info",
            "The model version being served (value 1).",
            ["model_version"],
            registry=registry,
        )

    def observe_event_to_publish(self, latency_s: float) -> bool:
        """Observe one list's event-to-publish latency, or count it in
        ``streamrec_implausible_latency`` when it cannot be real
        (:func:`implausible_latency`); returns whether it was plausible."""
        reason = implausible_latency(latency_s)
        if reason is not None:
            self.implausible_latency.labels(reason=reason).inc()
            return False
        self.event_to_publish.observe(max(0.0, latency_s))
        return True

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model_version=version).set(1)
