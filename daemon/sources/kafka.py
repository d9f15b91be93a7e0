"""Deployment events from Kafka: a consumer-group consumer that commits only what is durably stored.

The Kafka source of the pipeline. Each fetched batch of ``settings.deploy_topic``
(up to ``BATCH_SIZE`` records) is parsed (``sources.deploy_events``) and written
to the deployment history in ONE transaction (``DeployHistoryStore.record_batch``);
only then are the batch's offsets committed — a crash before the commit means a
redelivery, which the history absorbs (idempotent on the event id). One
transaction and one commit per batch, not per message: per-message transactions
capped this source near 80 events/s on SQLite (bench/kafka.py).

Batches are pipelined: while batch N is stored and its offsets committed (in a
task), batch N+1 is fetched and parsed, and its transaction may run while N's
commit is on its way to the broker. N+1's offsets are committed only after N's
commit succeeded, so a committed offset always covers durable batches only. When
a batch fails, every batch after it fails uncommitted too, and the consumer
seeks back to the first record of the failed one (``_abandon``). Deploy events never enter the alert inbox:
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

Every codec a producer may use (gzip, snappy, lz4, zstd) is decoded (aiokafka's
codec extras, see ``pyproject.toml``). A batch that still cannot be decoded — a
codec library missing, a corrupt batch — would make every fetch of its
partition fail. The consumer then steps through that partition one record at
a time: records before the bad batch are stored as usual, and each offset of
the bad batch goes to the dead-letter topic as a record with no value whose
headers say why and where (reason ``undecodable``). When even that is
impossible (no dead-letter topic configured, or the broker refuses the
dead-letter record for good) the offset is skipped: logged as an error with
its topic, partition and offset and counted (``rollbackd_deploy_events``
outcome ``skipped``). Either way the next event is processed.

The consuming loop runs under a ``Supervisor`` (``sources.supervised``): if it
stops for any reason it is restarted with backoff and counted, and its state
and lag are in ``health()`` for ``/readyz``. Connection settings (TLS, SASL)
come from ``sources.kafka_client``; a broker that refuses our credentials is
reported with the setting to fix and retried at the capped backoff, the
daemon stays up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CorruptRecordException,
    KafkaConnectionError,
    KafkaError,
    UnsupportedCodecError,
)

from daemon.clock import Clock
from daemon.config import KafkaSettings
from daemon.deploys import DeployEvent
from daemon.errors import ConfigError, InputError, TemporaryError
from daemon.logs import get_logger
from daemon.metrics import DEPLOY_EVENTS, INPUT_REJECTED
from daemon.sources.deploy_events import parse_deploy_event
from daemon.sources.kafka_client import KafkaConnection, connection, diagnose, explain
from daemon.sources.supervised import SourceHealth, Supervisor

log = get_logger(__name__)

ERROR_HEADER = "x-rollbackd-error"
REASON_HEADER = "x-rollbackd-error-reason"
MAX_BACKOFF_S = 30.0
# Records per fetch and per store transaction. 500 (Kafka's own max.poll.records): the offset commit's
# round trip is paid per batch, and with 100 it cost as much as storing the batch (bench/kafka.py).
BATCH_SIZE = 500
# Batches stored and committed while the next one is fetched and parsed: 1 overlaps the broker's commit,
# the store's transaction and our decoding, and keeps one batch of redelivery after a crash.
PIPELINE_DEPTH = 1
STEP_TIMEOUT_MS = 2000  # one record's fetch while stepping through a partition with an undecodable batch
# What a fetch raises when a batch cannot be turned into records; anything else from getmany that is
# not a KafkaError is treated the same way (a decoder failing on corrupt data raises its own errors).
UNDECODABLE = (UnsupportedCodecError, CorruptRecordException)


class DeployRecorder(Protocol):
    """The deployment history (``daemon.ingest.DeployHistoryStore``)."""

    async def record_batch(self, events: Sequence[DeployEvent]) -> int: ...  # how many were new


class _Retry(Exception):  # noqa: N818 - control flow inside the batch loop, never escapes
    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A fetched batch, decoded: the events to store, the poison to dead-letter, all records for the offsets."""

    records: Sequence[ConsumerRecord[Any, Any]]
    events: list[DeployEvent]
    poison: list[tuple[ConsumerRecord[Any, Any], InputError]]


def _parse(records: Sequence[ConsumerRecord[Any, Any]]) -> _Parsed:
    events: list[DeployEvent] = []
    poison: list[tuple[ConsumerRecord[Any, Any], InputError]] = []
    for record in records:
        try:
            events.append(parse_deploy_event(record.value))
        except InputError as exc:
            poison.append((record, exc))
    return _Parsed(records, events, poison)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A batch being stored and committed while the next one is fetched."""

    records: Sequence[ConsumerRecord[Any, Any]]
    task: asyncio.Task[None]


class DeployConsumer:
    """Consumes deployment events; ``start()``/``stop()`` are idempotent; usable as ``async with``."""

    def __init__(
        self,
        settings: KafkaSettings,
        history: DeployRecorder,
        clock: Clock,
        *,
        batch_size: int = BATCH_SIZE,
        client_id: str = "rollbackd",
    ) -> None:
        self._settings = settings
        self._history = history
        self._clock = clock
        self._batch_size = batch_size
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._supervisor = Supervisor("kafka-deploy-consumer", self._run, clock)
        self._failures = 0
        self._inflight: deque[_InFlight] = deque()  # oldest first
        self.processed = 0  # messages committed (stored, duplicate, dead-lettered or skipped)
        self.retries = 0  # batches (or connection attempts) retried after a temporary failure

    async def __aenter__(self) -> DeployConsumer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start consuming in a supervised background task, which joins the group once the broker answers.

        The connection settings are checked here (files readable): a ``ConfigError`` names the setting.
        """
        connection(self._settings)
        self._supervisor.start()

    @property
    def running(self) -> bool:
        """Whether the consumer is alive: consuming, or being restarted after it stopped."""
        return self._supervisor.running

    @property
    def restarts(self) -> int:
        return self._supervisor.restarts

    def health(self) -> SourceHealth:
        """State, lag and last error, for ``/readyz``."""
        return self._supervisor.health()

    async def stop(self) -> None:
        """Stop consuming and leave the group; uncommitted messages are redelivered to whoever is next."""
        await self._supervisor.stop()
        await self._close_clients()

    def _backoff(self) -> float:
        self._failures += 1
        self.retries += 1
        return min(MAX_BACKOFF_S, 2.0 ** (self._failures - 1))

    async def _connect(self) -> AIOKafkaConsumer:
        """Start the clients, retrying with capped backoff while the broker does not answer or refuses us."""
        s = self._settings
        while True:
            try:
                conn = connection(s)  # secrets re-read: a rotated password is used on the next attempt
                await self._start_clients(conn)
            except (KafkaError, ConfigError) as exc:
                await self._close_clients()
                await self._connect_failed(exc, connection_or_none(s))
                continue
            except BaseException:
                await self._close_clients()
                raise
            self._failures = 0
            assert self._consumer is not None  # noqa: S101 - set by _start_clients
            log.info("deploy consumer started", topic=s.deploy_topic, group=s.group_id, connection=conn.describe())
            return self._consumer

    async def _start_clients(self, conn: KafkaConnection) -> None:
        s = self._settings
        self._producer = AIOKafkaProducer(**conn.client_kwargs(), client_id=f"{self._client_id}-dlq", acks="all")
        self._consumer = AIOKafkaConsumer(
            s.deploy_topic,
            **conn.client_kwargs(),
            group_id=s.group_id,
            client_id=self._client_id,
            enable_auto_commit=False,  # we commit after the event is stored, never before
            auto_offset_reset="earliest",
            max_poll_records=self._batch_size,
        )
        await self._producer.start()
        await self._consumer.start()

    async def _connect_failed(self, exc: KafkaError | ConfigError, conn: KafkaConnection | None) -> None:
        """Say why, naming the setting to check, and wait out the backoff."""
        if isinstance(exc, ConfigError) or conn is None:
            why = str(exc)
        elif isinstance(exc, KafkaConnectionError):
            why = await diagnose(conn)  # aiokafka only logs the cause of "Unable to bootstrap"
        else:
            why = explain(exc, conn)
        delay = self._backoff()
        self._supervisor.report("failing", error=why)
        retriable = isinstance(exc, KafkaError) and exc.retriable and "kafka.sasl" not in why
        (log.warning if retriable else log.error)(
            "kafka: deploy consumer cannot connect, retrying", error=why, delay_s=delay, attempt=self._failures
        )
        await self._clock.sleep(delay)

    async def _close_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def _run(self) -> None:
        try:
            consumer = await self._connect()
            self._supervisor.report("running")
            while True:
                await self._poll(consumer)
        finally:
            await self._abandon(None, cancel=True)  # stopping: what is in flight stays uncommitted, redelivered
            await self._close_clients()

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        """One fetch, handed to the pipeline; temporary trouble is retried with backoff, never raised."""
        try:
            try:
                records = await self._fetch(consumer)
                if records:
                    self._launch(consumer, _parse(records))
                await self._settle(drain=not records)
            except asyncio.CancelledError:
                raise
            except BaseException:
                await self._abandon(consumer, cancel=False)
                raise
            self._failures = 0
            self._supervisor.report("running", lag=await self._lag(consumer))
        except _Retry as retry:
            await self._clock.sleep(retry.delay)
        except KafkaError as exc:  # broker trouble fetching, committing or dead-lettering: seeked back, again
            delay = self._backoff()
            self._supervisor.report("failing", error=f"{type(exc).__name__}: {exc}")
            log.warning("kafka error, retrying", error=str(exc), delay_s=delay)
            await self._clock.sleep(delay)
        except Exception:
            delay = self._backoff()
            log.exception("deploy consumer failed on a batch, retrying", delay_s=delay)
            await self._clock.sleep(delay)

    async def _fetch(self, consumer: AIOKafkaConsumer) -> list[ConsumerRecord[Any, Any]]:
        """The next batch, or [] when there was an undecodable one (stepped through: stored and committed)."""
        error: BaseException
        try:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=self._batch_size)
        except KafkaError as exc:
            if not isinstance(exc, UNDECODABLE):
                raise
            error = exc
        except Exception as exc:  # noqa: BLE001 - a decoder's own error on a corrupt batch
            error = exc
        else:
            return [r for _tp, batch in fetched.items() for r in batch]
        await self._settle(drain=True)  # stepping through commits offsets itself: the batches before it first
        await self._step_through(consumer, error)
        return []

    def _launch(self, consumer: AIOKafkaConsumer, batch: _Parsed) -> None:
        """Start storing ``batch`` while the next one is fetched; its commit waits for the batch before it."""
        before = self._inflight[-1].task if self._inflight else None
        task = asyncio.create_task(self._write(consumer, batch, before), name="kafka-deploy-batch")
        self._inflight.append(_InFlight(batch.records, task))

    async def _settle(self, *, drain: bool) -> None:
        """Wait for the oldest batches until at most ``PIPELINE_DEPTH`` are in flight (none when ``drain``).

        A batch's error is raised here, the batch still in flight: ``_abandon`` then seeks back to it.
        """
        keep = 0 if drain else PIPELINE_DEPTH
        while self._inflight and (len(self._inflight) > keep or self._inflight[0].task.done()):
            await self._inflight[0].task
            self._inflight.popleft()

    async def _abandon(self, consumer: AIOKafkaConsumer | None, *, cancel: bool) -> None:
        """After a failure (or to stop): end every batch in flight, then seek back to the first one not committed.

        A batch after a failed one fails too (its commit waits for the failed one), so the seek goes
        back to the failed batch and everything after it is fetched again, in order.
        """
        inflight, self._inflight = list(self._inflight), deque()
        if cancel:
            for batch in inflight:
                batch.task.cancel()
        await asyncio.gather(*(b.task for b in inflight), return_exceptions=True)
        undone = [r for b in inflight if b.task.cancelled() or b.task.exception() is not None for r in b.records]
        if consumer is not None and undone:
            self._rewind(consumer, undone)

    @staticmethod
    async def _lag(consumer: AIOKafkaConsumer) -> int | None:
        """Records between our position and the end of each assigned partition, as of the last fetch."""
        total, known = 0, False
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            total += max(0, high - await consumer.position(tp))
            known = True
        return total if known else None

    async def _step_through(self, consumer: AIOKafkaConsumer, error: BaseException) -> None:
        """A fetched batch could not be decoded: read each partition one record at a time to find it.

        Good records are stored in order; the offset at which a fetch fails is dead-lettered (or
        skipped) and committed, and the partition goes on after it.
        """
        log.warning("deploy events: a batch cannot be decoded, reading record by record", error=repr(error)[:300])
        for tp in sorted(consumer.assignment()):
            good: list[ConsumerRecord[Any, Any]] = []
            for _ in range(self._batch_size):
                position = await consumer.position(tp)
                try:
                    fetched = await consumer.getmany(tp, timeout_ms=STEP_TIMEOUT_MS, max_records=1)
                except KafkaError as exc:
                    if not isinstance(exc, UNDECODABLE):
                        raise
                    await self._undecodable(consumer, good, tp, position, exc)
                    good = []
                    continue
                except Exception as exc:  # noqa: BLE001 - see UNDECODABLE
                    await self._undecodable(consumer, good, tp, position, exc)
                    good = []
                    continue
                if not fetched.get(tp):
                    break
                good.extend(fetched[tp])
            if good:
                await self._batch(consumer, good)

    async def _undecodable(
        self,
        consumer: AIOKafkaConsumer,
        before: Sequence[ConsumerRecord[Any, Any]],
        tp: TopicPartition,
        offset: int,
        exc: BaseException,
    ) -> None:
        """Store what came before, then dead-letter (or skip) ``offset``, commit past it and seek after it."""
        if before:
            await self._batch(consumer, before)
        error = InputError(f"record batch cannot be decoded: {type(exc).__name__}: {exc}", reason="undecodable")
        where = (tp.topic, tp.partition, offset)
        await self._dead_letter(where, None, b"", (), error)  # no value to keep: the headers say where it is
        await consumer.commit({tp: offset + 1})
        consumer.seek(tp, offset + 1)
        self.processed += 1

    async def _batch(self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Store and commit ``records`` now, outside the pipeline (stepping through); sought back on error."""
        try:
            await self._write(consumer, _parse(records), None)
        except BaseException:
            self._rewind(consumer, records)
            raise

    async def _write(self, consumer: AIOKafkaConsumer, batch: _Parsed, before: asyncio.Task[None] | None) -> None:
        """Store a batch in one transaction, dead-letter its poison, then commit its offsets.

        The commit waits for ``before``, the batch fetched just before this one: offsets move forward
        only over batches that are all stored (or dead-lettered). If ``before`` failed, so does this
        one, uncommitted; storing again what was stored is a no-op.
        """
        if batch.events:
            await self._store(batch.events)
        for r, error in batch.poison:
            await self._dead_letter((r.topic, r.partition, r.offset), r.key, r.value, r.headers or (), error)
        if before is not None:
            await before
        await self._commit(consumer, batch.records)
        self.processed += len(batch.records)

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

    async def _dead_letter(
        self,
        where: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        exc: InputError,
    ) -> None:
        """Publish the poison message with why it failed, or skip it loudly when no dead-letter topic takes it.

        Raises a retriable ``KafkaError`` while the broker is unreachable: the batch is retried.
        """
        topic, partition, offset = where
        INPUT_REJECTED.labels(source="kafka", reason=exc.reason).inc()
        context = {"reason": exc.reason, "error": str(exc), "topic": topic, "partition": partition, "offset": offset}
        dlq = self._settings.dead_letter_topic
        if not dlq:
            return self._skipped("no dead-letter topic configured", context)
        producer = self._producer
        assert producer is not None  # noqa: S101 - set by start()
        letter_headers = [
            *headers,
            (ERROR_HEADER, str(exc)[:1000].encode()),
            (REASON_HEADER, exc.reason.encode()),
            ("x-rollbackd-original-topic", topic.encode()),
            ("x-rollbackd-original-partition", str(partition).encode()),
            ("x-rollbackd-original-offset", str(offset).encode()),
        ]
        try:
            await producer.send_and_wait(dlq, value=value, key=key, headers=letter_headers)
        except KafkaError as send_error:
            if send_error.retriable:
                raise
            return self._skipped(f"{dlq} refused it: {type(send_error).__name__}: {send_error}", context)
        DEPLOY_EVENTS.labels(outcome="dead_lettered").inc()
        log.warning("deploy event dead-lettered", **context)
        return None

    @staticmethod
    def _skipped(why: str, context: dict[str, Any]) -> None:
        DEPLOY_EVENTS.labels(outcome="skipped").inc()
        log.error("deploy event SKIPPED: it cannot be processed nor dead-lettered", why=why, **context)


def connection_or_none(settings: KafkaSettings) -> KafkaConnection | None:
    """The connection, or None when its files cannot be read (the error already says which)."""
    try:
        return connection(settings)
    except ConfigError:
        return None
