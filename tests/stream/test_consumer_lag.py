"""The consumer-lag gauge that autoscalers read (deploy/k8s/autoscaling.yaml)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.pipeline import Pipeline


def lag(registry: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["partition"]: s.value
        for metric in registry.collect()
        if metric.name == "streamrec_consumer_lag"
        for s in metric.samples
    }


def test_lag_is_end_offset_minus_the_next_offset_per_assigned_partition():
    registry = CollectorRegistry()
    owner = SimpleNamespace(metrics=Metrics(registry))
    Pipeline.record_lag(owner, {0: 9, 1: 99}, {0: 25, 1: 100, 2: None})  # type: ignore[arg-type]
    assert lag(registry) == {"0": 15.0, "1": 0.0}


def test_a_partition_taken_away_and_given_back_shows_no_lag_from_its_old_offset():
    registry = CollectorRegistry()
    owner = SimpleNamespace(metrics=Metrics(registry))
    processed = {0: 9, 1: 10}
    Pipeline.record_lag(owner, processed, {0: 25, 1: 20})  # type: ignore[arg-type]
    Pipeline.record_lag(owner, processed, {0: 30})  # type: ignore[arg-type]  # 1 revoked
    assert lag(registry) == {"0": 20.0}
    assert processed == {0: 9}
    # Partition 1 comes back, processed meanwhile by another worker up to 5,000: no
    # series until this worker processes it again (not 5,000 of phantom lag).
    Pipeline.record_lag(owner, processed, {0: 30, 1: 5000})  # type: ignore[arg-type]
    assert lag(registry) == {"0": 20.0}
