"""Model-written reasons reach users: a list, then its upgrade, both read by a plain Kafka
consumer, against the real broker and Redis, a running worker and `streamrec reasons
upgrade` as a process of its own.

The language model here is an OpenAI-compatible server on loopback that answers each
prompt with its first fact as a sentence (faithful by construction); the writer calls it
through the same HTTP backend as a real server. What is tested is the delivery: the
contract of the update, the stored list the API serves, and the writer's metrics.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest

from streamrec.stream.redis_store import RedisStore
from streamrec.stream.worker.reason_writer import model_tag
from tests.conftest import ROOT, free_port, settings_env
from tests.deploy.test_dashboard import writer_families
from tests.integration.kafka_helpers import Collector, event, produce

pytestmark = pytest.mark.integration

SCHEMA = json.loads((ROOT / "stream" / "schemas" / "reason_update.schema.json").read_text())


def first_fact_sentence(user_message: str) -> str:
    fact = user_message.splitlines()[1].removeprefix("- ").rstrip(".")
    return f"{fact}, so this one may suit you."


class FirstFactHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        answer = {
            "choices": [{"message": {"role": "assistant", "content": first_fact_sentence(user)}}]
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class LMServer(ThreadingHTTPServer):
    # The writer opens several connections at once; the default backlog of 5 lets the
    # kernel drop some, and a dropped connection retries after 1 s.
    request_queue_size = 64


@pytest.fixture
def lm_server() -> Iterator[str]:
    server = LMServer(("127.0.0.1", 0), FirstFactHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _some(collector: Collector) -> list[dict[str, object]]:
    """What the topic holds after a few seconds' reading (none yet is no failure)."""
    try:
        return collector.wait_for(lambda rs: len(rs) > 0, timeout=3)
    except AssertionError:
        return []


def _titles(evidence: object) -> list[str]:
    if isinstance(evidence, dict):
        own = [evidence["title"]] if isinstance(evidence.get("title"), str) else []
        return own + [t for k, v in evidence.items() if k != "title" for t in _titles(v)]
    if isinstance(evidence, list):
        return [t for v in evidence for t in _titles(v)]
    return []


def _metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:  # noqa: S310
        text = resp.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_list_then_its_model_written_upgrade_reach_a_plain_consumer_and_the_store(
    settings, running, lm_server, tmp_path: Path
):
    settings = settings.model_copy(
        update={
            "topic_reason_updates": f"{settings.topic_recommendations}-upgrades",
            "reason_lm_url": lm_server,
            "reason_generator": "template",  # the worker's own path is unchanged
            "reason_writer_metrics_port": free_port(),
        }
    )
    log_path = tmp_path / "writer.log"
    with log_path.open("wb") as log:
        writer = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "reasons", "upgrade"],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        updates = Collector(settings, settings.topic_reason_updates)
        # The writer starts at the latest offset once it has joined its group: send one
        # event per user until updates come back.
        deadline = time.monotonic() + 90
        n = 0
        got: list[dict[str, object]] = []
        while not got:
            assert writer.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            produce(
                settings,
                settings.topic_events,
                [event(f"u{n}", f"reader-{n}", f"running-{n % 20}", "view")],
            )
            n += 1
            if n % 3 == 0:
                got = _some(updates)
        update = got[0]
        jsonschema.validate(update, SCHEMA)

        lists = Collector(settings, settings.topic_recommendations).wait_for(
            lambda rs: any(r["recommendation_id"] == update["recommendation_id"] for r in rs)
        )
        [published] = [r for r in lists if r["recommendation_id"] == update["recommendation_id"]]
        assert published["user_id"] == update["user_id"]
        assert published["trigger_event_id"] == update["trigger_event_id"]
        assert update["list_generated_at"] == published["generated_at"]
        assert update["upgraded_at"] >= published["generated_at"]
        by_id = {i["item_id"]: i for i in published["items"]}
        assert 1 <= len(update["items"]) <= settings.reason_upgrade_top_n
        for upgraded in update["items"]:
            original = by_id[upgraded["item_id"]]
            assert upgraded["rank"] == original["rank"] <= settings.reason_upgrade_top_n
            assert upgraded["reason_code"] == original["reason_code"]
            assert upgraded["reason"] != original["reason"]
            assert upgraded["reason"].endswith(", so this one may suit you.")
            # Written as a frame ([ITEM 1]), delivered with this list's own titles.
            assert "[ITEM" not in upgraded["reason"]
            titles = _titles(original["evidence"])
            assert not titles or any(t in upgraded["reason"] for t in titles), upgraded

        # The stored list, which the API and `streamrec explain` serve, carries them too.
        async def stored() -> bytes | None:
            store = RedisStore.from_settings(settings)
            try:
                return await store.latest_recommendation(str(update["user_id"]))
            finally:
                await store.close()

        async def frames() -> dict[str, str | None]:
            store = RedisStore.from_settings(settings)
            try:
                return await store.load_reason_frames(model_tag(settings), "en")
            finally:
                await store.close()

        # The frames it wrote are kept for the next writer of this model.
        assert any(answer and "[ITEM 1]" in answer for answer in asyncio.run(frames()).values())

        served = json.loads(asyncio.run(stored()) or b"{}")
        assert served["trigger_event_id"] == update["trigger_event_id"]
        served_reasons = {i["item_id"]: i["reason"] for i in served["items"]}
        for upgraded in update["items"]:
            assert served_reasons[upgraded["item_id"]] == upgraded["reason"]
        untouched = set(by_id) - {i["item_id"] for i in update["items"]}
        assert all(served_reasons[i] == by_id[i]["reason"] for i in untouched)

        port = settings.reason_writer_metrics_port
        assert _metric(port, "streamrec_reason_upgrades_total", outcome="upgraded") >= 1
        # Every reason-writer metric the dashboard charts is exported by this writer.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:  # noqa: S310
            exported = {
                line.split()[2]
                for line in resp.read().decode().splitlines()
                if line.startswith("# TYPE ")
            }
        assert writer_families() <= exported
        assert _metric(port, "streamrec_reason_upgrade_seconds_count") >= 1
        writer_log = log_path.read_text()
        assert "reason writer: following" in writer_log  # it says what it does
        assert "reader-" not in writer_log  # and names no user
    finally:
        writer.terminate()
        writer.wait(timeout=30)
    assert writer.returncode == 0, log_path.read_text()
