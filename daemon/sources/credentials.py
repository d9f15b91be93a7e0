"""Credentials of the connections sources open (Kafka brokers, Prometheus): TLS contexts and secrets.

One ``TlsSettings`` (``daemon.config``) describes trust (a CA bundle, or the
system's), an optional client certificate for mutual TLS, and whether the
server's name is checked; ``client_context`` turns it into an
``ssl.SSLContext`` both clients take. Every file problem is a ``ConfigError``
naming the setting, raised when the client is built (at start-up, and by
``rollbackd config check``), never at the first connection; so is a secret
reference that cannot be read (``read_secret``).
"""

from __future__ import annotations

import ssl

from daemon.config import SecretRef, TlsSettings
from daemon.errors import ConfigError


def client_context(tls: TlsSettings, setting: str) -> ssl.SSLContext:
    """An ``SSLContext`` for ``tls``; ``setting`` (e.g. ``kafka.tls``) prefixes every error."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except OSError as exc:
            raise ConfigError(f"{setting}.ca_file {tls.ca_file}: not a readable PEM CA bundle: {_why(exc)}") from None
    if tls.cert_file is not None and tls.key_file is not None:
        password = read_secret(tls.key_password, f"{setting}.key_password") if tls.key_password else None
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=password)
        except OSError as exc:
            raise ConfigError(
                f"{setting}.cert_file {tls.cert_file} / key_file {tls.key_file}: cannot load the client "
                f"certificate: {_why(exc)}"
            ) from None
    # Hostname checking off still verifies the chain: it is for brokers addressed by IP whose
    # certificates name only the host, never a way to accept any certificate.
    context.check_hostname = tls.check_hostname
    return context


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)  # ssl.SSLError is an OSError


def read_secret(ref: SecretRef, setting: str) -> str:
    """``ref``'s value; its ``ConfigError`` names ``setting`` (never the value)."""
    try:
        return ref.read()
    except ConfigError as exc:
        raise ConfigError(f"{setting}: {exc}") from None
