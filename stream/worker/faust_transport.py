"""Faust's aiokafka transport with two changes to its consumer.

**It reads committed data.** Faust reads uncommitted data unless the app itself runs
exactly-once (which would also make every publish transactional). So events a
transactional producer wrote were processed as they arrived, even when that transaction
was later aborted. With ``read_committed`` the consumer reads up to the last stable
offset: aborted events are skipped, and events of an open transaction wait for its
commit. Producers that do not use transactions see no difference.

**A stopping worker waits a bounded time for its batch in flight.** Faust waits, without
limit, for every event that started processing to be acknowledged before it stops. A
batch waiting for an unreachable Redis (retried, so that no event is lost) therefore kept
a worker from stopping on SIGTERM for as long as Redis was down. After ``drain_s`` the
consumer now commits what was acknowledged and stops; the batch in flight is not
committed, so it is consumed again after the restart (user state is idempotent per
event id, and duplicates are published again). Rebalances still wait: the partitions'
next owner must not start before the batch is done.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver

log = logging.getLogger(__name__)


class _ReadCommittedThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # The constructor's argument, read when the consumer starts its fetcher; Faust
        # hard-codes it, so it is set here before start.
        consumer._isolation_level = "read_committed"  # noqa: SLF001
        return consumer


class _ReadCommittedConsumer(driver.Consumer):
    #: Set when a stopping worker gave up on its batch in flight: Faust acknowledges the
    #: events of a cancelled agent, and those offsets must not be committed.
    _commits_closed = False

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        if self._commits_closed:
            return False
        return bool(await super()._commit_tps(tps, start_new_transaction))

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_empty(self) -> None:
        drain_s = getattr(self.transport, "drain_s", None)
        if drain_s is None or not self.app.should_stop:  # a rebalance: wait for the batch
            await super().wait_empty()
            return
        # Faust's loop with a deadline (cancelling Faust's own loop does not stop it).
        deadline = time.monotonic() + drain_s
        while self._unacked_messages and time.monotonic() < deadline:
            await self.commit()
            if not self._unacked_messages:
                break
            await self._wait_for_ack(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
            self._clean_unacked_messages()
        await self.commit_and_end_transactions()
        if self._unacked_messages:
            self._commits_closed = True
            log.warning(
                "stopping with %d event(s) still in processing after %g s (is Redis "
                "reachable?); they are not committed and will be consumed again",
                len(self._unacked_messages),
                drain_s,
            )


class ReadCommittedTransport(driver.Transport):
    """Set as ``app.transport`` before the app declares its topics.

    Args:
        drain_s: how long a stopping worker waits for its batch in flight.
    """

    Consumer = _ReadCommittedConsumer

    def __init__(self, *args: Any, drain_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drain_s = drain_s
