"""The Kafka settings: how topics are sized when created, the broker's answer read, and
the codec of what streamrec produces."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from streamrec.stream.kafka_io import topic_errors, topic_specs
from streamrec.stream.settings import Settings


@pytest.mark.parametrize(("brokers", "replicas"), [(1, 1), (2, 2), (3, 3), (7, 3)])
def test_topics_get_three_replicas_or_every_broker_of_a_smaller_cluster(brokers, replicas):
    specs = topic_specs(Settings(), brokers)
    assert {t.replication_factor for t in specs} == {replicas}


def test_an_explicit_replication_factor_wins_even_beyond_the_brokers():
    specs = topic_specs(Settings(topic_replication_factor=5), brokers=3)
    assert {t.replication_factor for t in specs} == {5}


def test_partitions_and_compaction():
    settings = Settings(topic_partitions=6)
    specs = {t.name: t for t in topic_specs(settings, brokers=1)}
    assert specs[settings.topic_events].num_partitions == 6
    assert specs[settings.topic_recommendations].num_partitions == 6
    assert specs[settings.topic_reason_updates].num_partitions == 6  # keyed by user, as lists
    assert specs[settings.topic_items].topic_configs == {"cleanup.policy": "compact"}
    assert set(specs) == {
        settings.topic_events,
        settings.topic_items,
        settings.topic_recommendations,
        settings.topic_dlq,
        settings.topic_control,
        settings.topic_reason_updates,
    }


def test_create_topics_answers_of_every_version_are_read_alike():
    v0 = SimpleNamespace(topic_errors=[("a", 0)])
    v3 = SimpleNamespace(topic_errors=[("a", 38, "only 1 broker(s) are registered")])
    v5 = SimpleNamespace(topics=[("a", 29, "denied", 3, 1, [])])
    assert topic_errors(v0) == [("a", 0, None)]
    assert topic_errors(v3) == [("a", 38, "only 1 broker(s) are registered")]
    assert topic_errors(v5) == [("a", 29, "denied")]


@pytest.mark.parametrize(("setting", "client"), [("none", None), ("lz4", "lz4"), ("zstd", "zstd")])
def test_the_compression_setting_becomes_the_clients_codec(setting, client):
    assert Settings(kafka_compression=setting).producer_compression == client


def test_an_unknown_codec_is_refused_at_startup():
    with pytest.raises(ValidationError, match="kafka_compression"):
        Settings(kafka_compression="brotli")
