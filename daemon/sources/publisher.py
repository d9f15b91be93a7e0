"""The outbox's ``kafka`` channel: sends rollbackd's decision and action events to ``settings.decisions_topic``.

The outbound end of the pipeline for other systems and for replay. Nothing
here is awaited by a decision or a rollback: ``incidents`` queues each event
(``sources.decision_events``) as an outbox row in the transaction of the change
it reports, and ``notify.outbox.OutboxWorker`` hands the row to ``deliver``, as
it hands Slack rows to Slack. So a broker outage only delays publications: the
rows wait, in order per incident (the worker never sends row N+1 of an incident
before row N), and none is lost. ``KafkaPublisher`` implements the worker's
``Notifier`` protocol structurally; it lives here because aiokafka may only be
imported under ``daemon.sources``.

The producer starts on the first delivery, never at start-up, so a broker that
is down does not keep the daemon from starting. While the broker cannot be
reached every delivery raises ``TemporaryError`` with a delay from one shared,
capped backoff, so waiting rows cost one connection attempt per interval, not
one each. Events are keyed by incident id (one incident's events stay in order
on one partition); the producer waits for all in-sync replicas and is
idempotent. A delivery whose acknowledgement was lost is sent again with the
same ``event_id``, which is how a consumer recognises the copy. TLS and SASL
come from ``sources.kafka_client``, like the deploy consumer's.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError

from daemon.clock import Clock, SystemClock
from daemon.config import KafkaSettings
from daemon.errors import ConfigError, InputError, PermanentError, TemporaryError
from daemon.logs import get_logger
from daemon.sources.decision_events import HEADER, SCHEMA
from daemon.sources.deploy_events import validate
from daemon.sources.kafka_client import connection, diagnose, explain

log = get_logger(__name__)

CHANNEL = "kafka"
# Bounds one send, so a broker that stopped answering cannot hold an outbox slot for aiokafka's 40 s default.
SEND_TIMEOUT_S = 10.0
# The broker is infrastructure next to us: once it is back, publications should follow within seconds.
RETRY_BASE_S = 1.0
RETRY_MAX_S = 10.0


class KafkaPublisher:
    """The ``kafka`` outbox channel; ``stop()`` is idempotent; usable as ``async with``."""

    channel = CHANNEL

    def __init__(self, settings: KafkaSettings, *, client_id: str = "rollbackd", clock: Clock | None = None) -> None:
        if not settings.decisions_topic:
            raise ValueError("KafkaPublisher needs kafka.decisions_topic")
        self._settings = settings
        self._topic = settings.decisions_topic
        self._client_id = f"{client_id}-decisions"
        self._clock = clock or SystemClock()
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._failures = 0
        self._retry_at: datetime | None = None
        # Sends that timed out but may still be delivered, by event id (see ``_send``).
        self._in_flight: dict[str, asyncio.Future[Any]] = {}

    async def __aenter__(self) -> KafkaPublisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        self._in_flight.clear()
        if producer is not None:
            await producer.stop()

    async def deliver(self, payload: dict[str, Any]) -> None:
        """Send one outbox row's event and wait for the broker's acknowledgement.

        ``TemporaryError`` (reason ``kafka``) while the broker cannot take it; ``PermanentError``
        for an event that no broker would ever take (invalid, or larger than the broker allows).
        """
        event = {k: v for k, v in payload.items() if k != "outbox_id"}  # the worker's, not the event's
        try:
            validate(SCHEMA, event, "decision event")
        except InputError as exc:
            raise PermanentError(str(exc), reason=exc.reason) from None
        self._wait_out_backoff()
        producer = await self._started()
        try:
            await self._send(producer, event)
        except MessageSizeTooLargeError as exc:
            raise PermanentError(f"event too large for {self._topic}: {exc}", reason="too_large") from exc
        except (KafkaError, TimeoutError) as exc:
            raise self._unreachable(f"publishing to {self._topic} failed: {exc!r}") from exc
        self._failures, self._retry_at = 0, None

    async def _send(self, producer: AIOKafkaProducer, event: dict[str, Any]) -> None:
        """Send ``event`` and wait for the acknowledgement, at most ``SEND_TIMEOUT_S``.

        A send that timed out stays queued in the producer and is delivered once the broker is
        back; the outbox's retry of that row then waits for the same send instead of queueing a
        copy behind it.
        """
        event_id = str(event["event_id"])
        sent = self._in_flight.get(event_id)
        if sent is None:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                sent = await producer.send(
                    self._topic, value=orjson.dumps(event), key=str(event["incident_id"]).encode(), headers=[HEADER]
                )
            sent.add_done_callback(_retrieve)
            self._in_flight[event_id] = sent
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await asyncio.shield(sent)
        except TimeoutError:
            raise  # still in flight: kept for the retry
        except BaseException:
            self._in_flight.pop(event_id, None)
            raise
        self._in_flight.pop(event_id, None)

    async def _started(self) -> AIOKafkaProducer:
        """The producer, started now if need be; ``TemporaryError`` while the broker is out of reach."""
        async with self._starting:
            if self._producer is not None:
                return self._producer
            self._wait_out_backoff()  # a delivery that queued behind a failed start must not start again
            try:
                conn = connection(self._settings)  # secrets re-read: a rotated password is used on the next start
            except ConfigError as exc:
                raise self._unreachable(str(exc)) from None
            producer = AIOKafkaProducer(
                **conn.client_kwargs(),
                client_id=self._client_id,
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=int(SEND_TIMEOUT_S * 1000),
            )
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                why = await diagnose(conn) if isinstance(exc, KafkaConnectionError) else explain(exc, conn)
                log.warning("kafka: decision publisher cannot connect", error=why)
                raise self._unreachable(f"kafka unreachable ({conn.describe()}): {why}") from exc
            self._producer = producer
            log.info("decision publisher connected", topic=self._topic, connection=conn.describe())
            return producer

    def _wait_out_backoff(self) -> None:
        now = self._clock.now()
        if self._retry_at is not None and now < self._retry_at:
            wait = (self._retry_at - now).total_seconds()
            raise TemporaryError(f"kafka unreachable; next try in {wait:.1f}s", reason="kafka", delay=wait)

    def _unreachable(self, message: str) -> TemporaryError:
        """Open the shared backoff: every delivery waits it out instead of trying the broker itself."""
        self._failures += 1
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (self._failures - 1))
        self._retry_at = self._clock.now() + timedelta(seconds=delay)
        return TemporaryError(message, reason="kafka", delay=delay)


def _retrieve(sent: asyncio.Future[Any]) -> None:
    # A send whose retry never came (the daemon stopping) must not log "exception never retrieved".
    if not sent.cancelled():
        sent.exception()


__all__ = ["CHANNEL", "KafkaPublisher"]
