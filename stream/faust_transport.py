"""Faust's aiokafka transport with one change: the worker's consumer reads committed data.

Faust reads uncommitted data unless the app itself runs exactly-once (which would also
make every publish transactional). So events a transactional producer wrote were
processed as they arrived, even when that transaction was later aborted. With
``read_committed`` the consumer reads up to the last stable offset: aborted events are
skipped, and events of an open transaction wait for its commit. Producers that do not use
transactions see no difference.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver


class _ReadCommittedThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # The constructor's argument, read when the consumer starts its fetcher; Faust
        # hard-codes it, so it is set here before start.
        consumer._isolation_level = "read_committed"  # noqa: SLF001
        return consumer


class _ReadCommittedConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(driver.Transport):
    """Set as ``app.transport`` before the app declares its topics."""

    Consumer = _ReadCommittedConsumer
