"""Deployment events from Kafka: a consumer-group consumer that commits only what is durably stored.

The Kafka source of the pipeline. Each message of ``settings.deploy_topic`` is
parsed (``sources.deploy_events``), written to the inbox and the deployment
history, and only then is its offset committed — a crash before the commit
means a redelivery, which both writes absorb (idempotent on the event id).

A message that cannot be parsed or fails the schema goes to
``settings.dead_letter_topic`` with the reason in its headers
(``x-rollbackd-error``, ``x-rollbackd-error-reason``, and the original topic,
partition and offset) and the consumer goes on. While the inbox is full
(``QueueFullError``) every assigned partition is paused and the message is
fetched again once there is room; other temporary failures (store or Kafka
down) seek back and retry with backoff. Nothing is skipped silently.
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
from daemon.errors import InputError, QueueFullError, TemporaryError
from daemon.logs import get_logger
from daemon.metrics import DEPLOY_EVENTS, INPUT_REJECTED
from daemon.model import DeployEvent
from daemon.sources.deploy_events import parse_deploy_event

log = get_logger(__name__)

ERROR_HEADER = "x-rollbackd-error"
REASON_HEADER = "x-rollbackd-error-reason"
MAX_BACKOFF_S = 30.0


class DeploySink(Protocol):
    """The inbox, as this source needs it (``daemon.ingest.Inbox``)."""

    async def accept_deploy(self, event: DeployEvent) -> bool: ...

    async def has_room(self) -> bool: ...


class DeployRecorder(Protocol):
    """The deployment history (``daemon.ingest.DeployHistoryStore``)."""

    async def record(self, event: DeployEvent) -> bool: ...


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
            batch = list((await consumer.getmany(timeout_ms=1000, max_records=self._batch_size)).items())
            try:
                for index, (tp, records) in enumerate(batch):
                    try:
                        await self._partition(consumer, tp, records)
                    except Exception:
                        # The partitions not reached yet were fetched too: rewind them as well.
                        for later_tp, later in batch[index + 1 :]:
                            consumer.seek(later_tp, later[0].offset)
                        raise
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

    async def _partition(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Sequence[Any]) -> None:
        """Handle one partition's records in order; commit the ones done. Seek back and raise to retry."""
        done: int | None = None
        try:
            for record in records:
                await self._one(record)
                done = record.offset
        except Exception:
            # Everything from the failed record on must be fetched again, in order.
            consumer.seek(tp, records[0].offset if done is None else done + 1)
            raise
        finally:
            if done is not None:
                await consumer.commit({tp: done + 1})
                self.processed += len([r for r in records if r.offset <= done])

    async def _one(self, record: ConsumerRecord[Any, Any]) -> None:
        try:
            event = parse_deploy_event(record.value)
        except InputError as exc:
            await self._dead_letter(record, exc)
            return
        try:
            new = await self._inbox.accept_deploy(event)
            await self._history.record(event)
        except QueueFullError as exc:
            DEPLOY_EVENTS.labels(outcome="queue_full").inc()
            raise _Retry(exc.delay or 1.0, pause=True) from None
        except TemporaryError as exc:
            DEPLOY_EVENTS.labels(outcome="retried").inc()
            self._failures += 1
            log.warning("deploy event not stored, retrying", event_id=event.event_id, error=str(exc))
            raise _Retry(exc.delay or min(MAX_BACKOFF_S, 2.0**self._failures), pause=False) from None
        DEPLOY_EVENTS.labels(outcome="accepted" if new else "duplicate").inc()

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
                await consumer.getmany(timeout_ms=0)
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
