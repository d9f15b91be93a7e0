"""How rollbackd's Kafka clients reach and authenticate to the brokers: one place for TLS and SASL.

The deploy consumer, its dead-letter producer, the decision publisher and
``rollbackd replay --kafka`` all take their connection from
``connection(settings)``: the bootstrap servers, the security protocol derived
from ``kafka.tls`` and ``kafka.sasl`` (PLAINTEXT, SSL, SASL_PLAINTEXT or
SASL_SSL), the TLS context, and the SASL mechanism with its credentials
(PLAIN and SCRAM-SHA-256/512 with a user and password, OAUTHBEARER with a
token file re-read at every login). Secrets are read when the connection is
built — at each connection attempt, so a rotated Secret is picked up on the
next one — and an unreadable file is a ``ConfigError`` naming the setting.

aiokafka reports a failed bootstrap as "Unable to bootstrap" and only logs
the cause; ``diagnose`` opens one connection itself to say what really went
wrong (refused, certificate, SASL) and which setting to look at.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, UnsupportedSaslMechanismError

from daemon.config import KafkaSettings, SecretRef
from daemon.sources.credentials import client_context, read_secret

DIAGNOSE_TIMEOUT_S = 10.0


class TokenFileProvider(AbstractTokenProvider):  # type: ignore[misc] # aiokafka ships no type hints
    """OAUTHBEARER tokens from a secret reference, read afresh at every login (a sidecar refreshes the file)."""

    def __init__(self, ref: SecretRef) -> None:
        self._ref = ref

    async def token(self) -> str:
        return await asyncio.to_thread(self._ref.read)


@dataclass(frozen=True)
class KafkaConnection:
    """The connection keyword arguments every aiokafka client here takes, and a description for messages."""

    bootstrap_servers: str
    security_protocol: str
    options: dict[str, Any] = field(default_factory=dict)
    mechanism: str | None = None
    username: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap_servers, "security_protocol": self.security_protocol} | dict(
            self.options
        )

    def describe(self) -> str:
        who = f" {self.mechanism}" + (f" as {self.username}" if self.username else "") if self.mechanism else ""
        return f"{self.security_protocol}{who} to {self.bootstrap_servers}"


def connection(settings: KafkaSettings) -> KafkaConnection:
    """The connection for ``settings``; ``ConfigError`` naming the setting when a file or secret cannot be read."""
    options: dict[str, Any] = {}
    if settings.tls is not None:
        options["ssl_context"] = client_context(settings.tls, "kafka.tls")
    sasl = settings.sasl
    if sasl is not None:
        options["sasl_mechanism"] = sasl.mechanism
        if sasl.token is not None:
            read_secret(sasl.token, "kafka.sasl.token")  # fail now, naming the setting, not at the first login
            options["sasl_oauth_token_provider"] = TokenFileProvider(sasl.token)
        elif sasl.password is not None:
            options["sasl_plain_username"] = sasl.username
            options["sasl_plain_password"] = read_secret(sasl.password, "kafka.sasl.password")
    protocol = ("SASL_" if sasl is not None else "") + ("SSL" if settings.tls is not None else "PLAINTEXT")
    return KafkaConnection(
        settings.bootstrap_servers,
        protocol,
        options,
        mechanism=sasl.mechanism if sasl is not None else None,
        username=sasl.username if sasl is not None else None,
    )


async def diagnose(conn: KafkaConnection) -> str:
    """Why the first bootstrap server refuses us, in words naming the setting to check."""
    host, _, port = conn.bootstrap_servers.split(",")[0].strip().rpartition(":")
    kwargs = {k: v for k, v in conn.client_kwargs().items() if k != "bootstrap_servers"}
    try:
        async with asyncio.timeout(DIAGNOSE_TIMEOUT_S):
            probe = await create_conn(host, int(port), request_timeout_ms=int(DIAGNOSE_TIMEOUT_S * 1000), **kwargs)
    except TimeoutError:
        return f"{host}:{port} did not answer within {DIAGNOSE_TIMEOUT_S:.0f}s (kafka.bootstrap_servers)"
    except (OSError, KafkaError, ValueError) as exc:
        return explain(exc, conn)
    probe.close()
    return f"a connection to {host}:{port} works now; the broker it advertises may not (kafka.bootstrap_servers)"


def explain(exc: BaseException, conn: KafkaConnection) -> str:
    """One failure to connect, with the setting that most likely causes it."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    hints = [
        (isinstance(exc, UnsupportedSaslMechanismError),
         f"the broker does not enable kafka.sasl.mechanism {conn.mechanism}"),
        (isinstance(exc, KafkaError) and "authentic" in lowered,
         "check kafka.sasl.username and kafka.sasl.password (or kafka.sasl.token)"),
        ("certificate verify failed" in lowered, "check kafka.tls.ca_file and kafka.tls.check_hostname"),
        ("closed" in lowered and conn.security_protocol.endswith("SSL"),
         "the broker ended the TLS session: does it want a client certificate (kafka.tls.cert_file)?"),
        ("ssl" in lowered or "tls" in lowered,
         f"check kafka.tls (is the listener's protocol {conn.security_protocol}?)"),
        (isinstance(exc, ConnectionError), "check kafka.bootstrap_servers"),
    ]  # fmt: skip
    for applies, hint in hints:
        if applies:
            return f"{text} — {hint}"
    return text
