"""Deployment events from Kafka: a consumer-group consumer that commits only what is durably stored.

The Kafka source of the pipeline. Each fetched batch of ``settings.deploy_topic``
is parsed (``sources.deploy_events``) and written to the inbox and the
deployment history in ONE transaction (``Inbox.accept_deploys`` with
``DeployHistoryStore.record_many``); only then are the batch's offsets
committed — a crash before the commit means a redelivery, which both writes
absorb (idempotent on the event id). One transaction and one commit per batch,
not per message: per-message transactions capped this source near 80 events/s
on SQLite (bench/kafka.py).

A message that cannot be parsed or fails the schema goes to
``settings.dead_letter_topic`` with the reason in its headers
(``x-rollbackd-error``, ``x-rollbackd-error-reason``, and the original topic,
partition and offset) before its offset is committed, and the consumer goes
on. While the inbox is full (``QueueFullError``, or room for only part of a
batch) every assigned partition is paused and what was not stored is fetched
again once there is room; other temporary failures (store or Kafka down) seek
back and retry with backoff. Nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.clock import Clock
from daemon.config import KafkaSettings
from daemon.errors import InputError, QueueFullError, TemporaryError
from daemon.logs import get_logger
from daemon.metrics import DEPLOY_EVENTS, INPUT_REJECTED
from daemon.model import DeployEvent
from daemon.sources.deploy_events import parse_deploy_event

log = get_logger(__name__)

ERROR_HEADER = "x-rollbackd-error"
REASON_HEADER = "x-rollbackd-error-reason"
MAX_BACKOFF_S = 30.0


# Writes the deploy history's rows inside the inbox's transaction (``DeployHistoryStore.record_many``).
HistoryWriter = Callable[[AsyncConnection, Sequence[DeployEvent]], Awaitable[object]]


class StoredBatch(Protocol):
    """What ``DeploySink.accept_deploys`` reports (``daemon.ingest.inbox.DeployBatchResult``)."""

    @property
    def stored(self) -> int: ...  # the leading events now durable; the rest found no room

    @property
    def accepted(self) -> int: ...  # of those, the ones that were new


class DeploySink(Protocol):
    """The inbox, as this source needs it (``daemon.ingest.Inbox``)."""

    async def accept_deploys(
        self, events: Sequence[DeployEvent], *, alongside: HistoryWriter | None = None
    ) -> StoredBatch: ...

    async def has_room(self) -> bool: ...


class DeployRecorder(Protocol):
    """The deployment history (``daemon.ingest.DeployHistoryStore``)."""

    async def record_many(self, connection: AsyncConnection, events: Sequence[DeployEvent]) -> int: ...


class _Retry(Exception):  # noqa: N818 - control flow inside the batch loop, never escapes
    def __init__(self, delay: float, *, pause: bool) -> None:
        super().__init__(delay)
        self.delay = delay
        self.pause = pause


class DeployConsumer:
    """Consumes deployment events; ``start()``/``stop()`` are idempotent; usable as ``async with``."""

    def __init__(
        self,
        settings: KafkaSettings,
        inbox: DeploySink,
        history: DeployRecorder,
        clock: Clock,
        *,
        batch_size: int = 100,
        client_id: str = "rollbackd",
    ) -> None:
        self._settings = settings
        self._inbox = inbox
        self._history = history
        self._clock = clock
        self._batch_size = batch_size
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self.processed = 0  # messages committed (stored, duplicate or dead-lettered)

    async def __aenter__(self) -> DeployConsumer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Join the consumer group and start consuming in a background task."""
        if self._task is not None:
            return
        s = self._settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, client_id=f"{self._client_id}-dlq", acks="all"
        )
        self._consumer = AIOKafkaConsumer(
            s.deploy_topic,
            bootstrap_servers=s.bootstrap_servers,
            group_id=s.group_id,
            client_id=self._client_id,
            enable_auto_commit=False,  # we commit after the event is stored, never before
            auto_offset_reset="earliest",
            max_poll_records=self._batch_size,
        )
        try:
            await self._producer.start()
            await self._consumer.start()
        except BaseException:
            await self._close_clients()
            raise
        self._task = asyncio.create_task(self._run(), name="kafka-deploy-consumer")
        log.info("deploy consumer started", topic=s.deploy_topic, group=s.group_id)

    async def stop(self) -> None:
        """Stop consuming and leave the group; uncommitted messages are redelivered to whoever is next."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_clients()

    async def _close_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - set by start() before the task exists
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=self._batch_size)
            records = [r for _tp, batch in fetched.items() for r in batch]
            if not records:
                continue
            try:
                await self._batch(consumer, records)
                self._failures = 0
            except _Retry as retry:
                await self._back_off(consumer, retry)
            except KafkaError as exc:  # broker trouble committing or dead-lettering: seeked back, try again
                self._failures += 1
                log.warning("kafka error, retrying", error=str(exc))
                await self._clock.sleep(min(MAX_BACKOFF_S, 2.0**self._failures))
            except Exception:
                self._failures += 1
                log.exception("deploy consumer failed on a batch, retrying")
                await self._clock.sleep(min(MAX_BACKOFF_S, 2.0**self._failures))

    async def _batch(self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Store a fetched batch in one transaction, dead-letter its poison, then commit its offsets.

        ``records`` are in partition order. Whatever is not done — all of it on an error, the tail
        the inbox had no room for — is sought back so it is fetched again, in order; Kafka offsets
        are committed only for records that are stored or dead-lettered.
        """
        done = 0
        try:
            done = await self._store_and_dead_letter(records)
            await self._commit(consumer, records[:done])
        except BaseException:
            self._rewind(consumer, records)
            raise
        self.processed += done
        if done < len(records):
            self._rewind(consumer, records[done:])
            DEPLOY_EVENTS.labels(outcome="queue_full").inc()
            raise _Retry(1.0, pause=True)

    async def _store_and_dead_letter(self, records: Sequence[ConsumerRecord[Any, Any]]) -> int:
        """How many leading ``records`` are now stored or dead-lettered; raises ``_Retry`` or ``KafkaError``."""
        events: list[DeployEvent] = []
        at: list[int] = []  # index in ``records`` of each event
        poison: list[tuple[int, ConsumerRecord[Any, Any], InputError]] = []
        for index, record in enumerate(records):
            try:
                events.append(parse_deploy_event(record.value))
                at.append(index)
            except InputError as exc:
                poison.append((index, record, exc))
        done = len(records)
        if events:
            result = await self._store(events)
            if result.stored < len(events):
                done = at[result.stored]  # the first event there was no room for
        for index, record, error in poison:
            if index < done:
                await self._dead_letter(record, error)
        return done

    async def _store(self, events: Sequence[DeployEvent]) -> StoredBatch:
        try:
            result = await self._inbox.accept_deploys(events, alongside=self._history.record_many)
        except QueueFullError as exc:
            DEPLOY_EVENTS.labels(outcome="queue_full").inc()
            raise _Retry(exc.delay or 1.0, pause=True) from None
        except TemporaryError as exc:
            DEPLOY_EVENTS.labels(outcome="retried").inc(len(events))
            self._failures += 1
            log.warning("deploy events not stored, retrying", events=len(events), error=str(exc))
            raise _Retry(exc.delay or min(MAX_BACKOFF_S, 2.0**self._failures), pause=False) from None
        DEPLOY_EVENTS.labels(outcome="accepted").inc(result.accepted)
        DEPLOY_EVENTS.labels(outcome="duplicate").inc(result.stored - result.accepted)
        return result

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, done: Sequence[ConsumerRecord[Any, Any]]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in done:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        if offsets:
            await consumer.commit(offsets)

    @staticmethod
    def _rewind(consumer: AIOKafkaConsumer, pending: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Seek each partition back to its first record in ``pending`` (unless a rebalance took it away)."""
        first: dict[TopicPartition, int] = {}
        for record in pending:
            first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        assigned = consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                consumer.seek(tp, offset)

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], exc: InputError) -> None:
        """Publish the poison message with why it failed; raises KafkaError if that cannot be done."""
        producer = self._producer
        assert producer is not None  # noqa: S101 - set by start()
        headers = [
            *(record.headers or ()),
            (ERROR_HEADER, str(exc)[:1000].encode()),
            (REASON_HEADER, exc.reason.encode()),
            ("x-rollbackd-original-topic", record.topic.encode()),
            ("x-rollbackd-original-partition", str(record.partition).encode()),
            ("x-rollbackd-original-offset", str(record.offset).encode()),
        ]
        await producer.send_and_wait(
            self._settings.dead_letter_topic, value=record.value, key=record.key, headers=headers
        )
        DEPLOY_EVENTS.labels(outcome="dead_lettered").inc()
        INPUT_REJECTED.labels(source="kafka", reason=exc.reason).inc()
        log.warning(
            "deploy event dead-lettered",
            reason=exc.reason,
            error=str(exc),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )

    async def _back_off(self, consumer: AIOKafkaConsumer, retry: _Retry) -> None:
        if not retry.pause:
            await self._clock.sleep(retry.delay)
            return
        paused = consumer.assignment()
        consumer.pause(*paused)
        log.warning("inbox full: deploy topic paused", partitions=len(paused))
        try:
            while True:
                await self._clock.sleep(retry.delay)
                # Keep polling while paused so the group does not consider us dead (max.poll.interval).
                # A partition assigned by a rebalance meanwhile is not paused: seek back what it
                # delivered, or those records would be skipped by the next commit.
                stray = await consumer.getmany(timeout_ms=0)
                self._rewind(consumer, [r for batch in stray.values() for r in batch])
                if await self._has_room():
                    break
        finally:
            consumer.resume(*(tp for tp in paused if tp in consumer.assignment()))
        log.info("inbox has room again: deploy topic resumed")

    async def _has_room(self) -> bool:
        try:
            return await self._inbox.has_room()
        except TemporaryError:
            return False
