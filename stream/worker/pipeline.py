"""What the agents do with a micro-batch, independent of Faust so it can be driven directly.

Events: decode -> DLQ the bad ones -> apply to user state and item statistics (Redis,
one round-trip) -> read the item statistics the batch can cite (trending items, the
co-occurrences of the users' session items; one round-trip) -> rank in a worker thread
(one index search per batch) -> store latest lists -> hand back the messages to publish.
Each list is encoded once; the same bytes are stored and published. A replayed event
(already applied) is not ranked again unless its list may be missing: its stored list is
republished unchanged, or nothing is published where a newer list of the user was
(:meth:`RedisStore.replayed`).
Items: decode -> shared catalog in Redis -> local index. Every worker follows the
catalog change log in Redis, so all of them index every item.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from streamrec.engine.ports import CandidateIndex
from streamrec.engine.reasons import Language
from streamrec.engine.reasons.generator import LMReasonWriter
from streamrec.engine.serving.item_stats import ItemStats, session_items
from streamrec.engine.serving.recommender import IndexMismatchError, Ranked, Recommender
from streamrec.engine.types import Event, Item, UserState
from streamrec.index.faiss_index import IndexFileError, index_stamp
from streamrec.stream.contracts import (
    DLQ_KEY_MAX_BYTES,
    InvalidMessage,
    decode_control,
    decode_event,
    decode_item,
    encode_dead_letter,
    encode_recommendation,
)
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings
from streamrec.stream.worker.experiment_runner import ExperimentRunner, Running, fallback_count
from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.params import trend_params
from streamrec.stream.worker.reason_backends import (
    ReasonWarmer,
    build_reason_writer,
    rewrite_reasons,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class RawMessage:
    """One consumed Kafka record."""

    value: bytes
    key: bytes | None = None
    topic: str = ""
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class Outgoing:
    key: bytes | None
    value: bytes


@dataclass
class BatchResult:
    """Messages to publish for one batch, and the event timestamps behind the lists."""

    recommendations: list[Outgoing] = field(default_factory=list)
    event_ts: list[int] = field(default_factory=list)
    dead_letters: list[Outgoing] = field(default_factory=list)
    #: The running experiment's name, and each list's arm (None: not in it).
    experiment: str | None = None
    variants: list[str | None] = field(default_factory=list)


class Pipeline:
    """Event and item processing shared by the Faust agents, tests and benchmarks."""

    def __init__(
        self,
        settings: Settings,
        recommender: Recommender,
        store: RedisStore,
        metrics: Metrics,
        clock: Callable[[], int] = wall_clock_ms,
        index_loader: Callable[[], CandidateIndex] | None = None,
        model_loader: Callable[[Path], Recommender] | None = None,
    ) -> None:
        self.settings = settings
        self.recommender = recommender
        self.store = store
        self.metrics = metrics
        self.clock = clock
        # One thread owns the recommender: ranking and index updates never overlap, and
        # FAISS/numpy work stays off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rank")
        self._catalog_position: str | None = None
        self._catalog_lock = asyncio.Lock()
        self._index_loader = index_loader
        self._index_stamp = index_stamp(settings.index_dir)
        # The running A/B experiment (STREAMREC_EXPERIMENTS_FILE), its arms and counts.
        self.experiments = ExperimentRunner(settings, store, metrics, model_loader)
        self.experiments.start(recommender)
        metrics.set_model(recommender.model_version)
        metrics.index_items.set(len(recommender.index))
        # Language-model reasons (STREAMREC_REASON_GENERATOR=lm, or an arm's
        # reason_generator); None keeps the templates.
        self.reason_writer: LMReasonWriter | None = None
        self._warmer: ReasonWarmer | None = None
        self._ensure_reason_writer()

    def _ensure_reason_writer(self) -> None:
        """Build the language-model writer once something needs it."""
        running = self.experiments.running
        wanted = self.settings.reason_generator == "lm" or (
            running is not None and running.uses_lm()
        )
        if not wanted or self.reason_writer is not None:
            return
        catalog = self.recommender.catalog
        self.reason_writer = build_reason_writer(
            self.settings.model_copy(update={"reason_generator": "lm"}),
            [i.title for i in catalog],
            {i.category for i in catalog},
        )
        if self.reason_writer is not None:
            self._warmer = ReasonWarmer(self.reason_writer)
            self.reason_writer.on_miss = self._warmer.submit

    async def refresh_experiment(self) -> bool:
        """Re-read the experiments file if it changed (returns whether a new definition
        now runs), and refresh the arms' stored latency and coverage gauges."""
        changed = await self.experiments.reload(self.recommender, self._in_thread)
        if changed:
            self._ensure_reason_writer()
        await self.experiments.refresh(len(self.recommender.index))
        return changed

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._warmer is not None:
            self._warmer.close()

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # -- index hot swap -----------------------------------------------------------

    async def reload_index(self) -> bool:
        """Swap in the index at ``STREAMREC_INDEX_DIR`` if it was rebuilt since it was loaded
        (``streamrec index build`` writes its ids file last). The new index loads off the
        event loop and off the ranking thread; the swap itself runs on the ranking thread
        between batches, so no batch sees half of it. A rebuild that cannot be read yet is
        tried again on the next call; one for another model is kept out until it changes.

        Returns:
            Whether a new index is now in use.
        """
        stamp = index_stamp(self.settings.index_dir)
        if self._index_loader is None or stamp is None or stamp == self._index_stamp:
            return False
        loader = self._index_loader
        try:
            index = await asyncio.get_running_loop().run_in_executor(None, loader)
            upserted = await self._in_thread(lambda: self.recommender.swap_index(index))
        except IndexMismatchError as exc:
            self._index_stamp = stamp
            log.warning("rebuilt index not used: %s", exc)
            self.metrics.index_reloads.labels(outcome="rejected").inc()
            return False
        except (IndexFileError, OSError) as exc:
            log.warning("rebuilt index not readable yet, trying again later: %s", exc)
            self.metrics.index_reloads.labels(outcome="rejected").inc()
            return False
        self._index_stamp = stamp
        self.metrics.index_reloads.labels(outcome="swapped").inc()
        self.metrics.index_items.set(len(self.recommender.index))
        log.info(
            "swapped in the rebuilt index from %s (%d items, %d upserted from the catalog)",
            self.settings.index_dir,
            len(self.recommender.index),
            upserted,
        )
        return True

    # -- catalog ------------------------------------------------------------------

    async def sync_catalog(self) -> int:
        """Apply catalog changes made by any worker since the last sync; returns how many."""
        async with self._catalog_lock:
            if self._catalog_position is None:
                await self.store.mark_pseudonyms()  # once per start: how users are keyed
                items, self._catalog_position = await self.store.catalog_snapshot()
                log.info("catalog snapshot: %d items", len(items))
            else:
                items, self._catalog_position = await self.store.catalog_changes(
                    self._catalog_position
                )
            if items:
                await self._apply_items(items)
            return len(items)

    async def _apply_items(self, items: Sequence[Item]) -> None:
        def apply_one(recommender: Recommender, item: Item) -> str:
            try:
                return recommender.apply_item(item).action
            except Exception:  # noqa: BLE001 - one item must not stop the catalog sync
                log.exception("catalog item %r could not be applied", item.item_id)
                return "failed"

        def apply() -> list[str]:
            actions = [apply_one(self.recommender, item) for item in items]
            for recommender in self.experiments.arm_models():
                for item in items:
                    apply_one(recommender, item)
            return actions

        actions = await self._in_thread(apply)
        if self.reason_writer is not None:  # the guard must know every catalog name
            self.reason_writer.guard.update([i.title for i in items], [i.category for i in items])
        for action in actions:
            self.metrics.items_updated.labels(action=action).inc()
        self.metrics.index_items.set(len(self.recommender.index))

    async def handle_items(self, messages: Sequence[RawMessage]) -> list[Outgoing]:
        """Validate item messages, publish them to the shared catalog, apply them locally.

        A tombstone (empty value, the compacted topic's delete) makes a known item
        unavailable; for an unknown item it is ignored. If storing the batch fails for
        another reason than a Redis outage (retried inside), every message of the batch
        is dead-lettered as ``processing_error``, to be sent again: the agent
        acknowledges the batch once this returns.
        """
        try:
            return await self._handle_items(messages)
        except Exception as exc:  # noqa: BLE001 - dead-lettered, nothing dropped
            log.warning("a batch of %d item messages failed: %s", len(messages), type(exc).__name__)
            return [self._dead(msg, "processing_error", _error(exc)) for msg in messages]

    async def _handle_items(self, messages: Sequence[RawMessage]) -> list[Outgoing]:
        items: list[Item] = []
        dead: list[Outgoing] = []
        for msg in messages:
            if not msg.value and msg.key:
                known = self.recommender.catalog.get(msg.key.decode("utf-8", "replace"))
                if known is not None:
                    items.append(dataclasses.replace(known, available=False))
                continue
            try:
                items.append(decode_item(msg.value, max_bytes=self.settings.max_message_bytes))
            except InvalidMessage as exc:
                dead.append(self._dead(msg, exc.reason, exc.detail))
        await self.store.put_items(items)
        await self.sync_catalog()
        return dead

    # -- events -------------------------------------------------------------------

    async def handle_events(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Process one micro-batch of event messages; never raises for a bad event.

        Redis outages are retried inside (:meth:`RedisStore.retrying`), holding the batch.
        Any other failure (a Redis reply no retry can change, a bug) is retried event by
        event, and an event that fails alone goes to the dead-letter topic as
        ``processing_error``: the agent acknowledges a batch once this returns, so a
        raised error would drop every event of the batch without a trace.
        """
        try:
            return await self._handle_batch(messages)
        except Exception as exc:  # noqa: BLE001 - isolated below, nothing is dropped
            if len(messages) == 1:
                log.warning("event %s failed: %s", _where(messages[0]), type(exc).__name__)
                return BatchResult(
                    dead_letters=[self._dead(messages[0], "processing_error", _error(exc))]
                )
            # The type only: a Redis error names its keys, and keys hold user ids.
            log.warning(
                "a batch of %d events failed (%s); processing them one by one",
                len(messages),
                type(exc).__name__,
            )
        result = BatchResult()
        for msg in messages:
            one = await self.handle_events([msg])
            result.recommendations += one.recommendations
            result.event_ts += one.event_ts
            result.dead_letters += one.dead_letters
            result.variants += one.variants
            result.experiment = result.experiment or one.experiment
        return result

    async def _handle_batch(self, messages: Sequence[RawMessage]) -> BatchResult:
        result = BatchResult()
        self.metrics.batch_size.observe(len(messages))
        if self._catalog_position is None:
            await self.sync_catalog()
        now = self.clock()
        decoded: list[tuple[int, RawMessage, Event]] = []
        dead: dict[int, Outgoing] = {}  # by position, so the DLQ keeps the input order
        for position, msg in enumerate(messages):
            try:
                event = decode_event(
                    msg.value, max_bytes=self.settings.max_message_bytes, now_ms=now
                )
            except InvalidMessage as exc:
                dead[position] = self._dead(msg, exc.reason, exc.detail)
                continue
            decoded.append((position, msg, event))

        catalog = self.recommender.catalog
        if any(event.item_id not in catalog for _, _, event in decoded):
            await self.sync_catalog()  # the item may have just arrived through another worker
        events: list[Event] = []
        sources: list[RawMessage] = []
        for position, msg, event in decoded:
            if event.item_id in catalog:
                events.append(event)
                sources.append(msg)
            else:
                detail = f"`item_id` {event.item_id!r} is not in the catalog"
                dead[position] = self._dead(msg, "unknown_item", detail)
        result.dead_letters = [dead[p] for p in sorted(dead)]
        if not events:
            return result

        outcomes = await self.store.apply(events, now_ms=now)
        kept = []
        for event, msg, outcome in zip(events, sources, outcomes, strict=True):
            if outcome.forgotten:  # the user asked to be forgotten after this event
                self.metrics.forgotten_events.inc()
                continue
            self.metrics.events_consumed.labels(type=event.type).inc()
            if not outcome.applied:
                self.metrics.duplicate_events.inc()
            kept.append((event, msg, outcome))
        if not kept:
            return result
        # A replayed event (already applied) is ranked again only where its list may be
        # missing; otherwise its stored list goes out unchanged, or nothing where a newer
        # list was published after it (RedisStore.replayed).
        replays = iter(await self.store.replayed([e for e, _, a in kept if not a.applied]))
        plans = [None if a.applied else next(replays) for _, _, a in kept]
        for plan in plans:
            if plan is not None:
                self.metrics.replayed_lists.labels(outcome=plan.action).inc()
        actions = ["new" if plan is None else plan.action for plan in plans]
        to_rank = [n for n, action in enumerate(actions) if action in ("new", "rank", "rank_only")]
        if self.settings.publish == "latest_per_user":  # the last state holds the others
            last = {kept[n][0].user_id: n for n in to_rank}
            self.metrics.superseded_events.inc(len(to_rank) - len(last))
            to_rank = sorted(last.values())
        events = [kept[n][0] for n in to_rank]
        states = [kept[n][2].state for n in to_rank]
        ranked: list[Ranked | str] = []
        fallbacks: list[int] = []
        running = self.experiments.running  # one experiment for the whole batch
        every_arm = self.experiments.arms(running, [e for e, _, _ in kept])
        arms = [every_arm[n] for n in to_rank]
        if events:
            stats = await self._item_stats(states)
            started = time.perf_counter()
            ranked, fallbacks = await self._in_thread(
                lambda: self._rank_arms(states, events, arms, stats, running)
            )
            self.metrics.retrieval.observe(time.perf_counter() - started)
        # Each list is encoded once: the same bytes go to Redis and to Kafka.
        encoded = {
            n: encode_recommendation(r.recommendation)
            for n, r in zip(to_rank, ranked, strict=True)
            if isinstance(r, Ranked)
        }
        saved = [  # a "rank_only" list is older than the stored one: published, not stored
            (n, r)
            for n, r in zip(to_rank, ranked, strict=True)
            if isinstance(r, Ranked) and actions[n] != "rank_only"
        ]
        await self.store.save_results(
            [(r.recommendation, r.user_vector, kept[n][0].ts) for n, r in saved],
            [encoded[n] for n, _ in saved],
        )
        if events:
            await self.experiments.record(
                running, events, arms, [kept[n][2] for n in to_rank], ranked, fallbacks
            )
        result.experiment = None if running is None else running.name
        answers: dict[int, tuple[Ranked | str, str | None]] = {
            n: (r, arm) for n, r, arm in zip(to_rank, ranked, arms, strict=True)
        }
        for n, ((event, msg, _), plan) in enumerate(zip(kept, plans, strict=True)):
            if plan is not None and plan.stored is not None:  # "republish": the stored bytes
                result.recommendations.append(Outgoing(event.user_id.encode(), plan.stored))
                result.event_ts.append(event.ts)
                result.variants.append(every_arm[n])  # its latency counts, as a publish
                continue
            if n not in answers:
                continue  # "skip": a newer list of this user was published after this one
            r, arm = answers[n]
            if isinstance(r, Ranked):
                result.recommendations.append(Outgoing(event.user_id.encode(), encoded[n]))
                result.event_ts.append(event.ts)
                result.variants.append(arm)
            else:
                result.dead_letters.append(self._dead(msg, "processing_error", r))
        return result

    # -- control --------------------------------------------------------------------

    async def handle_control(self, messages: Sequence[RawMessage]) -> list[Outgoing]:
        """Carry out operator requests (``forget``); returns dead letters for bad ones, and
        for one that failed for another reason than a Redis outage (retried inside)."""
        dead = []
        for msg in messages:
            try:
                request = decode_control(msg.value, max_bytes=self.settings.max_message_bytes)
            except InvalidMessage as exc:
                dead.append(self._dead(msg, exc.reason, exc.detail))
                continue
            try:
                keys = await self.store.forget(request.user_id, until_ms=self.clock())
            except Exception as exc:  # noqa: BLE001 - dead-lettered, to be sent again
                log.warning("control request %s failed: %s", _where(msg), type(exc).__name__)
                dead.append(self._dead(msg, "processing_error", _error(exc)))
                continue
            self.metrics.control_requests.labels(type=request.type).inc()
            log.info(
                "forget request %s carried out: %d key(s) deleted",
                request.request_id or _where(msg),
                keys,
            )
        return dead

    async def _item_stats(self, states: list[UserState]) -> ItemStats:
        """Trending items and the co-occurrences of every user's session items."""
        window = self.settings.cooccurrence_window
        items = [i for s in states for i in session_items(s.history, window)]
        return await self.store.item_stats(
            items,
            self.clock(),
            trend_params(self.settings),
            co_limit=self.settings.cooccurrence_read_limit,
        )

    # -- ranking ----------------------------------------------------------------------

    def _rank_arms(
        self,
        states: list[UserState],
        events: list[Event],
        arms: Sequence[str | None],
        stats: ItemStats | None,
        running: Running | None,
    ) -> tuple[list[Ranked | str], list[int]]:
        """Rank each arm's users with the arm's model, settings and reason generator, in
        input order; with each list's count of reason fallbacks."""
        deadline = time.monotonic() + self.settings.reason_budget_ms / 1000
        if running is None:
            return self._write_reasons(
                self._rank_each(states, events, stats),
                self.settings.reason_generator == "lm",
                self.settings.reason_language,
                deadline,
            )
        out: list[Ranked | str | None] = [None] * len(events)
        fallbacks = [0] * len(events)
        for arm in dict.fromkeys(str(a) for a in arms):
            at = [i for i, a in enumerate(arms) if a == arm]
            ranker = self.experiments.ranker(running, arm, self.recommender)
            done = [
                self.experiments.label(r, running, arm) if isinstance(r, Ranked) else r
                for r in self._rank_each(
                    [states[i] for i in at], [events[i] for i in at], stats, ranker
                )
            ]
            spec = running.arms[arm]
            written, counts = self._write_reasons(
                done, spec.reason_generator == "lm", spec.params.reason_language, deadline
            )
            for i, r, n in zip(at, written, counts, strict=True):
                out[i], fallbacks[i] = r, n
        return [r for r in out if r is not None], fallbacks

    def _rank_each(
        self,
        states: list[UserState],
        events: list[Event],
        stats: ItemStats | None = None,
        recommender: Recommender | None = None,
    ) -> list[Ranked | str]:
        """Rank the batch; if that fails, rank event by event so one bad event cannot take
        the others down. Failures come back as their error text (for the DLQ)."""
        ids = [e.event_id for e in events]
        recommender = recommender or self.recommender
        try:
            return list(recommender.recommend(states, ids, self.clock(), stats=stats))
        except Exception:  # noqa: BLE001 - isolate the failing event below
            log.warning("ranking a batch of %d failed; retrying event by event", len(events))
        out: list[Ranked | str] = []
        for state, event_id in zip(states, ids, strict=True):
            try:
                out.extend(recommender.recommend([state], [event_id], self.clock(), stats=stats))
            except Exception as exc:
                log.exception("ranking failed for event %s", event_id)
                out.append(f"ranking failed: {type(exc).__name__}: {exc}")
        return out

    def _write_reasons(
        self, ranked: list[Ranked | str], use_lm: bool, language: Language, deadline: float
    ) -> tuple[list[Ranked | str], list[int]]:
        """Let the language model write the reason sentences (``use_lm``) by ``deadline``;
        with each list's count of reason fallbacks (:func:`fallback_count`)."""
        if not use_lm or self.reason_writer is None:
            return ranked, [
                fallback_count(r.recommendation) if isinstance(r, Ranked) else 0 for r in ranked
            ]
        lists = [r for r in ranked if isinstance(r, Ranked)]
        written, stats, outcomes = rewrite_reasons(
            self.reason_writer, lists, language, deadline=deadline
        )
        for outcome, n in stats.as_dict().items():
            self.metrics.reason_outcomes.labels(outcome=outcome).inc(n)
        done = iter(zip(written, outcomes, strict=True))
        out: list[Ranked | str] = []
        counts = []
        for r in ranked:
            if isinstance(r, Ranked):
                w, o = next(done)
                out.append(w)
                counts.append(fallback_count(w.recommendation, o))
            else:
                out.append(r)
                counts.append(0)
        return out, counts

    def record_published(self, result: BatchResult) -> None:
        """Count published lists and their event-to-publish latency (after Kafka acked).

        A latency that cannot be real (a ``ts`` in seconds, say) is counted as implausible
        and kept out of both latency histograms, where one would spoil every sum."""
        now = self.clock()
        plausible = [
            self.metrics.observe_event_to_publish((now - ts) / 1000.0) for ts in result.event_ts
        ]
        self.metrics.recommendations_published.inc(len(result.recommendations))
        if result.experiment is not None:
            self.experiments.published(
                result.experiment,
                [
                    (v, ts)
                    for v, ts, real in zip(result.variants, result.event_ts, plausible, strict=True)
                    if v and real
                ],
                now,
            )

    def record_lag(
        self, processed: MutableMapping[int, int], end_offsets: Mapping[int, int | None]
    ) -> None:
        """Export consumer lag: per assigned partition of the events topic, its end offset
        minus the next offset to process. ``processed``: the last processed offset per
        partition; partitions missing from ``end_offsets`` are no longer assigned: they
        lose their series and their offset here, so a partition that comes back after a
        rebalance shows no lag from its old offset until it is processed again."""
        for partition, end in end_offsets.items():
            done = processed.get(partition)
            if end is not None and done is not None:
                lag = max(0, end - (done + 1))
                self.metrics.consumer_lag.labels(partition=str(partition)).set(lag)
        for partition in [p for p in processed if p not in end_offsets]:
            del processed[partition]
        for labels in list(self.metrics.consumer_lag._metrics):  # noqa: SLF001 - label sets
            if int(labels[0]) not in end_offsets:
                self.metrics.consumer_lag.remove(*labels)

    def _dead(self, msg: RawMessage, reason: str, detail: str) -> Outgoing:
        self.metrics.dlq_events.labels(reason=reason).inc()
        log.info("dead-lettered %s: %s", _where(msg), reason)
        value = encode_dead_letter(
            msg.value,
            reason=reason,
            error=detail,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            failed_at=self.clock(),
        )
        key = None if msg.key is None else msg.key[:DLQ_KEY_MAX_BYTES]
        return Outgoing(key, value)


def _where(msg: RawMessage) -> str:
    """Where a message came from, for logs (never its content: it may name a person)."""
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
