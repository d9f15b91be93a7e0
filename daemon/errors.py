"""The error hierarchy shared by every stage of the pipeline.

Every error says whether trying again can help (``retriable``) and carries a
short ``reason`` that becomes a metric label, so a caller decides between
retry-with-backoff and give-up without parsing messages.
"""

from __future__ import annotations


class RollbackdError(Exception):
    """Root of every error rollbackd raises on purpose."""

    retriable: bool = False

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


class PermanentError(RollbackdError):
    """Trying again will give the same result (bad input, 4xx, forbidden)."""

    retriable = False


class TemporaryError(RollbackdError):
    """Trying again later may succeed; ``delay`` is a hint in seconds (e.g. Retry-After)."""

    retriable = True

    def __init__(self, message: str, *, reason: str = "temporary", delay: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.delay = delay


class InputError(PermanentError):
    """Something that arrived from outside is malformed; the message names what and where."""

    def __init__(self, message: str, *, reason: str = "invalid_input") -> None:
        super().__init__(message, reason=reason)


class ConfigError(PermanentError):
    """The configuration or a rule file is invalid; the message names file, line and field."""

    def __init__(self, message: str, *, reason: str = "invalid_config") -> None:
        super().__init__(message, reason=reason)


class QueueFullError(TemporaryError):
    """A bounded queue is full; the sender should retry (HTTP 503, Kafka pause)."""

    def __init__(self, message: str = "inbox is full, retry later", *, delay: float | None = 1.0) -> None:
        super().__init__(message, reason="queue_full", delay=delay)
