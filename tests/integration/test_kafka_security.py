"""Kafka with SASL/SCRAM-SHA-512: right credentials work end to end, wrong ones are refused
with a message that names the settings and never the password."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.cli.local_infra import LocalService, start_kafka
from streamrec.stream.cli.replay import wait_for_catalog
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import (
    KafkaUnavailableError,
    consumer,
    ensure_topics,
    producer,
    send_all,
)
from streamrec.stream.settings import Settings
from tests import shop
from tests.conftest import run_cli
from tests.integration.kafka_helpers import event

pytestmark = pytest.mark.integration
USER = "streamrec-svc"
PASSWORD = "scram-Pa55-word"  # noqa: S105 - test fixture


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker with a SCRAM-SHA-512 listener for USER; yields that listener's host:port."""
    state = tmp_path_factory.mktemp("sasl-kafka")
    service: LocalService = start_kafka(state, {"KAFKA_SASL_USERS": f"{USER}:{PASSWORD}"})
    yield (state / "bootstrap_sasl").read_text().strip()
    service.stop()


def _sasl(settings: Settings, address: str, password: str) -> Settings:
    return settings.model_copy(
        update={
            "kafka_bootstrap": address,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": SecretStr(password),
        }
    )


def test_sasl_settings_without_credentials_are_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="STREAMREC_KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_SSL")


def test_wrong_credentials_are_refused_with_a_message_naming_the_settings(
    settings, sasl_kafka
) -> None:
    wrong = _sasl(settings, sasl_kafka, "not-the-password")
    with pytest.raises(KafkaUnavailableError, match="refused the credentials") as caught:
        asyncio.run(ensure_topics(wrong, timeout_s=20))
    assert "STREAMREC_KAFKA_SASL_PASSWORD" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
    # The worker stops at startup with the same message, and exits non-zero.
    proc = run_cli(wrong, "worker")
    assert proc.returncode != 0
    assert "refused the credentials" in proc.stderr + proc.stdout
    assert "not-the-password" not in proc.stderr + proc.stdout


def test_with_the_right_credentials_the_worker_answers_over_sasl(
    settings, sasl_kafka, start_worker, tmp_path: Path
) -> None:
    secured = _sasl(settings, sasl_kafka, PASSWORD)
    asyncio.run(ensure_topics(secured))
    worker = start_worker(secured, "sasl")
    items = catalog_items(shop.catalog())

    async def run() -> list[dict[str, object]]:
        async with producer(secured) as prod:
            await send_all(
                prod, secured.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items]
            )
            await wait_for_catalog(secured, {i.item_id for i in items})
            await send_all(prod, secured.topic_events, [event("sasl-1", "u-sasl", "running-1")])
        got: list[dict[str, object]] = []
        async with consumer(secured, [secured.topic_recommendations], from_beginning=True) as c:
            deadline = asyncio.get_running_loop().time() + 90
            while not got and asyncio.get_running_loop().time() < deadline:
                for records in (await c.getmany(timeout_ms=500)).values():
                    got += [json.loads(r.value) for r in records if r.value is not None]
        return got

    got = asyncio.run(run())
    assert [r["trigger_event_id"] for r in got] == ["sasl-1"], worker.log()
    assert got[0]["items"]
    assert PASSWORD not in worker.log()
