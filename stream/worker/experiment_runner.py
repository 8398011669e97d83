"""The running A/B experiment inside a worker: who is in which arm, what each arm serves
with, and what is counted for the report.

Each arm ranks with its own knobs, and with its own model when the variant names a
``model_dir`` (loaded at start and on reload, with its own index and catalog copy). Online
learning is arm-local by construction: a user's vector (and its online adaptation) is
recomputed from the user's shared event history by the arm's own model on every event,
and no arm writes state that another arm reads; shared facts (history, trending,
co-occurrence, the catalog) stay shared.

The file is re-read when it changes (:meth:`ExperimentRunner.reload`); one that cannot
run is rejected with the reason and the previous experiment keeps running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.engine.serving.experiments import Experiment, ExperimentConfigError, assign
from streamrec.engine.serving.recommender import Ranked, Recommender
from streamrec.engine.serving.state import Applied
from streamrec.engine.types import Event, Recommendation
from streamrec.stream.redis_store import ExperimentRecord, RedisStore
from streamrec.stream.settings import Settings
from streamrec.stream.worker.experiment_config import (
    Arm,
    arms_of,
    file_stamp,
    load_running_experiment,
)
from streamrec.stream.worker.metrics import Metrics

__all__ = ["ACTIONS", "FALLBACK_CODE", "ExperimentRunner", "Running", "fallback_count"]

log = logging.getLogger(__name__)

#: Event types counted as actions on a recommendation.
ACTIONS = ("click", "add_to_cart", "purchase")
#: The reason code given when nothing personal explains an item.
FALLBACK_CODE = "popular"


@dataclass(frozen=True)
class Running:
    """A running experiment: its definition, its arms and the arms' own recommenders
    (for variants with a ``model_dir``)."""

    experiment: Experiment
    arms: dict[str, Arm]
    models: dict[str, Recommender] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.experiment.name

    def uses_lm(self) -> bool:
        """Whether any arm writes its reasons with the language model."""
        return any(a.reason_generator == "lm" for a in self.arms.values())


class ExperimentRunner:
    """The worker's experiment state. ``running`` is replaced whole on reload, so a batch
    that took it at its start finishes with one consistent experiment."""

    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        metrics: Metrics,
        model_loader: Callable[[Path], Recommender] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._model_loader = model_loader
        self._key = (
            b""
            if settings.experiment_key is None
            else settings.experiment_key.get_secret_value().encode()
        )
        self._stamp = file_stamp(settings.experiments_file)
        self.running: Running | None = None
        # Publish latency waiting to be stored: (experiment, variant, minute) -> [sum ms, n].
        self._latency: dict[tuple[str, str, int], list[int]] = {}

    # -- lifecycle ------------------------------------------------------------------

    def start(self, main: Recommender) -> None:
        """Load the file's experiment (at worker start: a file that cannot run stops the
        worker with the reason)."""
        experiment = load_running_experiment(self.settings)
        arms = arms_of(experiment, self.settings)
        running = self._install(experiment, arms, main, self._load_models(experiment, arms))
        if running is not None:
            log.info(
                "experiment %r running: %s",
                running.name,
                ", ".join(f"{v.name} {v.share:.0%}" for v in running.experiment.variants),
            )

    async def reload(
        self,
        main: Recommender,
        in_ranking_thread: Callable[[Callable[[], Running | None]], Awaitable[Running | None]],
    ) -> bool:
        """Re-read the experiments file if it changed; returns whether a new definition
        is now running. A file that cannot run is rejected (logged and counted) and the
        running experiment stays; it is not read again until it changes."""
        stamp = file_stamp(self.settings.experiments_file)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            experiment = load_running_experiment(self.settings)
            arms = arms_of(experiment, self.settings)
            models = await asyncio.get_running_loop().run_in_executor(
                None, lambda: self._load_models(experiment, arms)
            )
            before = None if self.running is None else self.running.name
            # On the ranking thread, which owns the catalogs: no catalog change can fall
            # between the new models' catch-up and the switch.
            running = await in_ranking_thread(lambda: self._install(experiment, arms, main, models))
        except ExperimentConfigError as exc:
            log.warning("experiments file change rejected, the current one stays: %s", exc)
            self.metrics.experiment_reloads.labels(outcome="rejected").inc()
            return False
        except Exception:  # noqa: BLE001 - a bad new definition must not stop the worker
            log.exception("experiments file change failed to load, the current one stays")
            self.metrics.experiment_reloads.labels(outcome="rejected").inc()
            return False
        self.metrics.experiment_reloads.labels(outcome="applied").inc()
        log.info(
            "experiments file reloaded: %s -> %s",
            before or "none",
            "none" if running is None else running.name,
        )
        return True

    def _load_models(
        self, experiment: Experiment | None, arms: dict[str, Arm]
    ) -> dict[Path, Recommender]:
        """The recommenders of every ``model_dir`` the arms name (one per folder)."""
        if experiment is None:
            return {}
        folders = {a.model_dir for a in arms.values()}
        folders.discard(None)
        if folders and self._model_loader is None:
            msg = f"experiment {experiment.name!r}: this process cannot load a model_dir"
            raise ExperimentConfigError(msg)
        out = {}
        for folder in sorted(f for f in folders if f is not None):
            try:
                out[folder] = self._model_loader(folder)  # type: ignore[misc]
            except Exception as exc:
                msg = f"experiment {experiment.name!r}: cannot load model_dir {folder}: {exc}"
                raise ExperimentConfigError(msg) from exc
        return out

    def _install(
        self,
        experiment: Experiment | None,
        arms: dict[str, Arm],
        main: Recommender,
        models: dict[Path, Recommender],
    ) -> Running | None:
        """Check every arm can rank, bring the new models' catalogs up to date with the
        main one, and make it the running experiment."""
        if experiment is None:
            self.running = None
            return None
        for recommender in models.values():
            for item in main.catalog:
                recommender.apply_item(item)
        own = {
            name: models[arm.model_dir] for name, arm in arms.items() if arm.model_dir is not None
        }
        for name, arm in arms.items():
            try:
                own.get(name, main).with_params(arm.params)
            except ValueError as exc:
                msg = f"experiment {experiment.name!r}, variant {name!r}: {exc}"
                raise ExperimentConfigError(msg) from exc
        self.running = Running(experiment, arms, own)
        return self.running

    def arm_models(self) -> list[Recommender]:
        """The arms' own recommenders, which follow the catalog too (ranking thread)."""
        running = self.running
        return [] if running is None else list({id(r): r for r in running.models.values()}.values())

    # -- per batch ------------------------------------------------------------------

    def arms(self, running: Running | None, events: Sequence[Event]) -> list[str | None]:
        """Each event's user's arm (None without a running experiment)."""
        if running is None:
            return [None] * len(events)
        return [assign(running.experiment, e.user_id, self._key) for e in events]

    def ranker(self, running: Running, arm: str, main: Recommender) -> Recommender:
        """The recommender of one arm (per batch: the main index may have been swapped)."""
        return running.models.get(arm, main).with_params(running.arms[arm].params)

    @staticmethod
    def label(ranked: Ranked, running: Running, arm: str) -> Ranked:
        rec: Recommendation = dataclasses.replace(
            ranked.recommendation, experiment=running.name, variant=arm
        )
        return dataclasses.replace(ranked, recommendation=rec)

    async def record(
        self,
        running: Running | None,
        events: Sequence[Event],
        arms: Sequence[str | None],
        outcomes: Sequence[Applied],
        lists: Sequence[Ranked | str],
        fallbacks: Sequence[int],
    ) -> None:
        """Count, per arm, the lists served, the actions attributed to them, the items
        shown and their reason fallbacks; a replayed event counts once."""
        if running is None:
            return
        name = running.name
        window_ms = self.settings.attribution_window_s * 1000
        kept = [
            i
            for i, (arm, outcome) in enumerate(zip(arms, outcomes, strict=True))
            if arm is not None and outcome.applied
        ]
        # Actions without a recommendation id: was the item recommended to them lately?
        implicit = [
            i
            for i in kept
            if events[i].type in ACTIONS
            and not isinstance((events[i].context or {}).get("recommendation_id"), str)
        ]
        attributed = {
            i
            for i, at in zip(
                implicit,
                await self.store.recommended_at(
                    name, [(events[i].user_id, events[i].item_id) for i in implicit]
                )
                if window_ms > 0
                else [None] * len(implicit),
                strict=True,
            )
            if at is not None and 0 <= events[i].ts - at <= window_ms
        }
        record = ExperimentRecord(window_s=self.settings.attribution_window_s)
        for i in kept:
            event, arm = events[i], str(arms[i])
            minute = event.ts // 60_000
            record.per_user.append((arm, event.user_id, "lists"))
            record.series.append((arm, f"{minute}:lists", 1))
            self.metrics.experiment_lists.labels(experiment=name, variant=arm).inc()
            by_id = event.type in ACTIONS and i not in implicit
            if by_id or i in attributed:
                record.per_user.append((arm, event.user_id, event.type))
                record.series.append((arm, f"{minute}:{event.type}", 1))
                self.metrics.experiment_actions.labels(
                    experiment=name,
                    variant=arm,
                    type=event.type,
                    attribution="id" if by_id else "window",
                ).inc()
            ranked = lists[i]
            if isinstance(ranked, Ranked):
                items = [item.item_id for item in ranked.recommendation.items]
                record.shown.append((arm, event.user_id, items, event.ts))
                record.series.append((arm, f"{minute}:items", len(items)))
                record.series.append((arm, f"{minute}:fallbacks", fallbacks[i]))
                self.metrics.experiment_items.labels(experiment=name, variant=arm).inc(len(items))
                self.metrics.experiment_reason_fallbacks.labels(experiment=name, variant=arm).inc(
                    fallbacks[i]
                )
        await self._write({name: record})

    async def _write(self, records: dict[str, ExperimentRecord]) -> None:
        """Store ``records`` (by experiment) with the publish latency counted so far: the
        running experiment's batch and latency go in one round-trip."""
        for (name, arm, minute), (total_ms, n) in self._latency.items():
            series = records.setdefault(name, ExperimentRecord()).series
            series.append((arm, f"{minute}:latency_ms", total_ms))
            series.append((arm, f"{minute}:published", n))
        self._latency.clear()
        for name, record in records.items():
            await self.store.record_experiment(name, record)

    def published(self, experiment: str, lists: Sequence[tuple[str, int]], now: int) -> None:
        """Count the publish latency of (variant, event ts) lists Kafka acked at ``now``
        (stored with the next batch's counts, or at the next refresh)."""
        for arm, ts in lists:
            latency = max(0, now - ts)
            self.metrics.experiment_latency.labels(experiment=experiment, variant=arm).observe(
                latency / 1000
            )
            bucket = self._latency.setdefault((experiment, arm, ts // 60_000), [0, 0])
            bucket[0] += latency
            bucket[1] += 1

    async def refresh(self, indexed: int) -> None:
        """Store the latency counted since the last batch, and set each arm's coverage
        gauge: distinct items recommended / ``indexed`` items."""
        await self._write({})
        running = self.running
        if running is None or indexed <= 0:
            return
        for arm in running.arms:
            distinct = await self.store.experiment_coverage(running.name, arm)
            self.metrics.experiment_coverage.labels(experiment=running.name, variant=arm).set(
                min(1.0, distinct / indexed)
            )


def fallback_count(recommendation: Recommendation, lm_outcomes: Sequence[str] = ()) -> int:
    """Items of a list whose reason fell back: the generic popularity reason, or a
    template sentence where the language model gave none."""
    outcomes = list(lm_outcomes) or [""] * len(recommendation.items)
    return sum(
        item.reason_code == FALLBACK_CODE or outcome.startswith("fallback")
        for item, outcome in zip(recommendation.items, outcomes, strict=True)
    )
