"""Experiment counters: lists served and the actions attributed to them, per arm."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamrec.stream.redis_store.connection import RedisConnection
from streamrec.stream.redis_store.keys import experiment_key
from streamrec.stream.redis_store.replies import member

log = logging.getLogger(__name__)


@dataclass
class ExperimentRecord:
    """One batch's experiment counts.

    Attributes:
        per_user: (variant, user id, what) to count one for; what in EXPERIMENT_PER_USER.
        series: (variant, "MINUTE:what", amount) to add to the arm's time series.
        shown: (variant, user id, item ids, event ts) of each list served: its items count
            toward the arm's coverage and, with ``window_s``, are remembered per user
            for attribution without a recommendation id.
        window_s: The attribution window (0: nothing remembered).
    """

    per_user: list[tuple[str, str, str]] = field(default_factory=list)
    series: list[tuple[str, str, int]] = field(default_factory=list)
    shown: list[tuple[str, str, list[str], int]] = field(default_factory=list)
    window_s: int = 0

    @property
    def empty(self) -> bool:
        return not (self.per_user or self.series or self.shown)


class ExperimentStore(RedisConnection):
    """Per-arm counters and per-user attribution marks."""

    async def record_experiment(self, experiment: str, record: ExperimentRecord) -> None:
        """Store one batch's experiment counts in one pipelined round-trip."""
        if record.empty:
            return

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for variant, user_id, what in record.per_user:
                    pipe.hincrby(
                        experiment_key(experiment, variant, what), self._stored_id(user_id), 1
                    )
                for variant, name, amount in record.series:
                    pipe.hincrby(experiment_key(experiment, variant, "series"), name, amount)
                for variant, user_id, items, ts in record.shown:
                    pipe.pfadd(experiment_key(experiment, variant, "items"), *items)
                    if record.window_s > 0 and items:
                        key = self._key(user_id, "rec_at")
                        pipe.hset(key, mapping=dict.fromkeys(items, f"{ts}|{experiment}"))
                        pipe.expire(key, record.window_s)
                await pipe.execute()

        await self.retrying("experiment", run)

    async def recommended_at(
        self, experiment: str, pairs: Sequence[tuple[str, str]]
    ) -> list[int | None]:
        """For each (user, item): the event time of the latest list of ``experiment`` that
        recommended the item to the user (within the attribution window), or None."""
        if not pairs:
            return []

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for user_id, item_id in pairs:
                    pipe.hget(self._key(user_id, "rec_at"), item_id)
                return list(await pipe.execute())

        out: list[int | None] = []
        for raw in await self.retrying("experiment", run):
            ts, _, name = (raw or b"").decode().partition("|")
            out.append(int(ts) if ts and name == experiment else None)
        return out

    async def experiment_counts(self, experiment: str, variant: str, what: str) -> dict[str, int]:
        """Per stored user id, the ``what`` counter of one arm (``"series"``: per
        ``MINUTE:what`` field, the arm's counts by minute of event time)."""
        raw = await self.retrying(
            "experiment", lambda: self.client.hgetall(experiment_key(experiment, variant, what))
        )
        return {member(k): int(v) for k, v in raw.items()}

    async def experiment_coverage(self, experiment: str, variant: str) -> int:
        """About how many distinct items the arm has recommended (HyperLogLog, ~1% error)."""
        key = experiment_key(experiment, variant, "items")
        return int(await self.retrying("experiment", lambda: self.client.pfcount(key)))
