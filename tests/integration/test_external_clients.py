"""The topic contracts spoken by a Kafka client other than ours: Apache Kafka's Java
producer and consumer (tests/integration/java/ExternalKafkaClient.java), as a shop's
backend would run them, with each compression codec Kafka offers."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest

from streamrec.stream.cli.local_infra import SCRIPTS, LocalService
from streamrec.stream.settings import Settings
from tests import shop
from tests.conftest import WorkerProcess
from tests.integration.conftest import start_with_catalog
from tests.integration.kafka_helpers import event

pytestmark = pytest.mark.integration

JAVA_CLIENT = Path(__file__).resolve().parent / "java" / "ExternalKafkaClient.java"
SCHEMAS = Path(__file__).resolve().parents[2] / "stream" / "schemas"
REC_SCHEMA = json.loads((SCHEMAS / "recommendation.schema.json").read_text())
DLQ_SCHEMA = json.loads((SCHEMAS / "dead_letter.schema.json").read_text())
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def java(*args: str, stdin: str = "", timeout: float = 120) -> list[str]:
    """Run java with the broker's jars on the classpath; its stdout lines."""
    binary = shutil.which("java")
    assert binary is not None, "the integration tests need a JDK (the broker runs on it too)"
    libs = subprocess.run(
        ["bash", str(SCRIPTS / "kafka.sh"), "libs"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = subprocess.run(  # noqa: S603 - our own test client and Kafka's tools
        [binary, "-cp", f"{libs}/*", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def java_produce(
    settings: Settings,
    topic: str,
    codec: str,
    lines: list[tuple[str, str]],
    transaction: str | None = None,
) -> None:
    """Send KEY, VALUE lines with the Java producer; ``transaction``: commit or abort them
    as one transaction."""
    stdin = "".join(f"{key}\t{value}\n" for key, value in lines)
    ending = [] if transaction is None else [transaction]
    bootstrap = settings.bootstrap_servers[0]
    out = java(str(JAVA_CLIENT), "produce", bootstrap, topic, codec, *ending, stdin=stdin)
    assert out[-1] == f"sent {len(lines)}"


def java_consume(settings: Settings, topic: str, count: int) -> list[tuple[str, dict]]:
    """(key, JSON value) of the first ``count`` records of ``topic``, read by the Java client."""
    lines = java(
        str(JAVA_CLIENT), "consume", settings.bootstrap_servers[0], topic, str(count), "90"
    )
    records = []
    for line in lines:
        key, _, value = line.partition("\t")
        records.append((key, json.loads(base64.b64decode(value))))
    return records


def shop_event(event_id: str, user: str, item: str, kind: str = "view") -> str:
    return event(event_id, user, item, kind)[1].decode()


def consumed(worker: WorkerProcess) -> float:
    types = ("view", "click", "add_to_cart", "purchase")
    return sum(worker.metric("streamrec_events_consumed_total", type=t) for t in types)


def wait_consumed(worker: WorkerProcess, count: int) -> None:
    deadline = time.monotonic() + 60
    while consumed(worker) < count:
        assert worker.proc.poll() is None, worker.log()
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)


def test_events_in_every_compression_codec_get_lists_the_java_consumer_reads(
    settings: Settings, running: WorkerProcess
):
    titles = dict(zip(shop.catalog()["item_id"], shop.catalog()["title"], strict=True))
    sent = 0
    for codec in CODECS:
        user = f"java-{codec}"
        java_produce(
            settings,
            settings.topic_events,
            codec,
            [
                (user, shop_event(f"{codec}-0", user, "running-1")),
                (user, shop_event(f"{codec}-1", user, "running-2", "click")),
                (user, shop_event(f"{codec}-2", user, "running-3", "add_to_cart")),
            ],
        )
        sent += 3
        wait_consumed(running, sent)  # the worker is still up after each codec

    records = java_consume(settings, settings.topic_recommendations, sent)
    by_trigger = {value["trigger_event_id"]: (key, value) for key, value in records}
    assert set(by_trigger) == {f"{c}-{n}" for c in CODECS for n in range(3)}
    for trigger, (key, rec) in by_trigger.items():
        jsonschema.validate(rec, REC_SCHEMA)
        assert key == rec["user_id"] == f"java-{trigger.rsplit('-', 1)[0]}"
        assert len(rec["items"]) == 10
        for item in rec["items"]:
            assert item["reason"]
            for cited in item["evidence"].get("items", []):
                assert cited["title"] == titles[cited["item_id"]]
    assert running.metric("streamrec_dlq_events_total", reason="invalid_json") == 0


def test_keyless_and_malformed_records_from_the_java_producer(
    settings: Settings, running: WorkerProcess
):
    """A producer that sets no key still gets a list for the user named in the event; a
    malformed record and one of 800 KB (under the broker's 1 MB limit, far over the
    worker's) go to the dead-letter topic with their reasons, and the worker goes on."""
    huge = json.dumps({"event_id": "huge", "user_id": "dora", "pad": "x" * 800_000})
    java_produce(
        settings,
        settings.topic_events,
        "lz4",
        [
            ("", shop_event("nokey-0", "dora", "books-1")),
            ("dora", "{not json"),
            ("dora", huge),
            ("dora", shop_event("nokey-1", "dora", "books-2", "purchase")),
        ],
    )
    recs = java_consume(settings, settings.topic_recommendations, 2)
    assert {rec["trigger_event_id"] for _, rec in recs} == {"nokey-0", "nokey-1"}
    assert all(rec["user_id"] == key == "dora" for key, rec in recs)
    dead = {rec["reason"]: (key, rec) for key, rec in java_consume(settings, settings.topic_dlq, 2)}
    assert set(dead) == {"invalid_json", "too_large"}
    for key, rec in dead.values():
        jsonschema.validate(rec, DLQ_SCHEMA)
        assert key == "dora"
    assert base64.b64decode(dead["invalid_json"][1]["original_b64"]) == b"{not json"
    too_large = dead["too_large"][1]
    assert too_large["original_size"] == len(huge)
    assert too_large["original_truncated"] is True
    assert huge.encode().startswith(base64.b64decode(too_large["original_b64"]))


def test_lists_the_worker_compresses_on_request_are_read_by_the_java_consumer(
    settings: Settings, kafka: LocalService, start_worker
):
    zstd = settings.model_copy(update={"kafka_compression": "zstd"})
    start_with_catalog(zstd, start_worker)
    java_produce(zstd, zstd.topic_events, "none", [("erin", shop_event("z-0", "erin", "books-3"))])

    ((key, rec),) = java_consume(zstd, zstd.topic_recommendations, 1)
    assert (key, rec["trigger_event_id"]) == ("erin", "z-0")
    jsonschema.validate(rec, REC_SCHEMA)
    batches = [
        line
        for segment in sorted(
            (kafka.state_dir / "data").glob(f"{zstd.topic_recommendations}-*/*.log")
        )
        for line in java("kafka.tools.DumpLogSegments", "--files", str(segment))
        if line.startswith("baseOffset:")
    ]
    assert batches
    assert all("compresscodec: zstd" in line for line in batches), batches


def test_events_of_an_aborted_transaction_are_not_answered(
    settings: Settings, running: WorkerProcess
):
    """The worker reads committed data only: a transaction's events count once it commits,
    and never if it aborts."""
    aborted = [("gus", shop_event(f"abort-{n}", "gus", "kitchen-1")) for n in range(3)]
    committed = [("gus", shop_event(f"commit-{n}", "gus", "kitchen-2")) for n in range(2)]
    java_produce(settings, settings.topic_events, "none", aborted, transaction="abort")
    java_produce(settings, settings.topic_events, "none", committed, transaction="commit")
    wait_consumed(running, 2)
    # Both transactions share the user's partition, and the committed one comes after the
    # aborted one there, so an aborted event would have been answered by now.
    recs = java_consume(settings, settings.topic_recommendations, 2)
    assert sorted(rec["trigger_event_id"] for _, rec in recs) == ["commit-0", "commit-1"]
    time.sleep(2)
    assert consumed(running) == 2
