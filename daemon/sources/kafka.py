"""Deployment events from Kafka: a consumer-group consumer that commits only what is durably stored.

The Kafka source of the pipeline. Each fetched batch of ``settings.deploy_topic``
is parsed (``sources.deploy_events``) and written to the deployment history in
ONE transaction (``DeployHistoryStore.record_batch``); only then are the batch's
offsets committed — a crash before the commit means a redelivery, which the
history absorbs (idempotent on the event id). One transaction and one commit per
batch, not per message: per-message transactions capped this source near 80
events/s on SQLite (bench/kafka.py). Deploy events never enter the alert inbox:
they have nothing to dispatch, and a burst of them must not use up the bound
that keeps the alert webhooks answering.

A message that cannot be parsed or fails the schema goes to
``settings.dead_letter_topic`` with the reason in its headers
(``x-rollbackd-error``, ``x-rollbackd-error-reason``, and the original topic,
partition and offset) before its offset is committed, and the consumer goes
on. A temporary failure (the store unreachable, the broker down) seeks back to
the first uncommitted record and retries with capped backoff; the consumer
never exits on one, and ``start()`` does not wait for the broker, so a broker
that is down does not keep the daemon from starting. Nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from daemon.clock import Clock
from daemon.config import KafkaSettings
from daemon.deploys import DeployEvent
from daemon.errors import InputError, TemporaryError
from daemon.logs import get_logger
from daemon.metrics import DEPLOY_EVENTS, INPUT_REJECTED
from daemon.sources.deploy_events import parse_deploy_event

log = get_logger(__name__)

ERROR_HEADER = "x-rollbackd-error"
REASON_HEADER = "x-rollbackd-error-reason"
MAX_BACKOFF_S = 30.0


class DeployRecorder(Protocol):
    """The deployment history (``daemon.ingest.DeployHistoryStore``)."""

    async def record_batch(self, events: Sequence[DeployEvent]) -> int: ...  # how many were new


class _Retry(Exception):  # noqa: N818 - control flow inside the batch loop, never escapes
    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class DeployConsumer:
    """Consumes deployment events; ``start()``/``stop()`` are idempotent; usable as ``async with``."""

    def __init__(
        self,
        settings: KafkaSettings,
        history: DeployRecorder,
        clock: Clock,
        *,
        batch_size: int = 100,
        client_id: str = "rollbackd",
    ) -> None:
        self._settings = settings
        self._history = history
        self._clock = clock
        self._batch_size = batch_size
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self.processed = 0  # messages committed (stored, duplicate or dead-lettered)
        self.retries = 0  # batches (or connection attempts) retried after a temporary failure

    async def __aenter__(self) -> DeployConsumer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start consuming in a background task, which joins the group once the broker answers."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="kafka-deploy-consumer")

    @property
    def running(self) -> bool:
        """Whether the consuming task is alive (it only ends on ``stop()``)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop consuming and leave the group; uncommitted messages are redelivered to whoever is next."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_clients()

    def _backoff(self) -> float:
        self._failures += 1
        self.retries += 1
        return min(MAX_BACKOFF_S, 2.0 ** (self._failures - 1))

    async def _connect(self) -> AIOKafkaConsumer:
        """Start the clients, retrying with capped backoff while the broker does not answer."""
        s = self._settings
        while True:
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
            except KafkaError as exc:
                await self._close_clients()
                delay = self._backoff()
                log.warning("kafka unreachable, deploy consumer retrying", error=str(exc), delay_s=delay)
                await self._clock.sleep(delay)
                continue
            except BaseException:
                await self._close_clients()
                raise
            self._failures = 0
            log.info("deploy consumer started", topic=s.deploy_topic, group=s.group_id)
            return self._consumer

    async def _close_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def _run(self) -> None:
        consumer = await self._connect()
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=self._batch_size)
                records = [r for _tp, batch in fetched.items() for r in batch]
                if not records:
                    continue
                await self._batch(consumer, records)
                self._failures = 0
            except _Retry as retry:
                await self._clock.sleep(retry.delay)
            except KafkaError as exc:  # broker trouble fetching, committing or dead-lettering: seeked back, again
                delay = self._backoff()
                log.warning("kafka error, retrying", error=str(exc), delay_s=delay)
                await self._clock.sleep(delay)
            except Exception:
                delay = self._backoff()
                log.exception("deploy consumer failed on a batch, retrying", delay_s=delay)
                await self._clock.sleep(delay)

    async def _batch(self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Store a fetched batch in one transaction, dead-letter its poison, then commit its offsets.

        ``records`` are in partition order. On any error all of them are sought back so they are
        fetched again, in order: offsets are committed only once every record is stored or
        dead-lettered, and storing again what was stored is a no-op.
        """
        try:
            events: list[DeployEvent] = []
            poison: list[tuple[ConsumerRecord[Any, Any], InputError]] = []
            for record in records:
                try:
                    events.append(parse_deploy_event(record.value))
                except InputError as exc:
                    poison.append((record, exc))
            if events:
                await self._store(events)
            for record, error in poison:
                await self._dead_letter(record, error)
            await self._commit(consumer, records)
        except BaseException:
            self._rewind(consumer, records)
            raise
        self.processed += len(records)

    async def _store(self, events: Sequence[DeployEvent]) -> None:
        try:
            new = await self._history.record_batch(events)
        except TemporaryError as exc:
            DEPLOY_EVENTS.labels(outcome="retried").inc(len(events))
            delay = max(exc.delay or 0.0, self._backoff())  # the longer of the store's hint and our backoff
            log.warning("deploy events not stored, retrying", events=len(events), error=str(exc), delay_s=delay)
            raise _Retry(delay) from None
        DEPLOY_EVENTS.labels(outcome="accepted").inc(new)
        DEPLOY_EVENTS.labels(outcome="duplicate").inc(len(events) - new)

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
