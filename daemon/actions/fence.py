"""Fencing for the actions stage: no write to the cluster unless this replica still holds the Lease.

Leadership alone is a belief: a replica paused past its lease (SIGSTOP, a long
GC, a frozen VM) wakes up still "leader" until it next fails to renew. So the
executor asks a ``Fence`` immediately before every patch. The ``FencingToken``
(the Lease's holder and ``leaseTransitions``) is captured when leadership is
acquired, stored with the rollback intent before anything changes, and each
check confirms both that the last renewal is younger than the renew deadline
and that the Lease on the API server still names the same holder and term.
A failed check raises ``NotLeaderError``: the write is not made, the target is
reported as interrupted, and the intent stays open for the new leader, whose
reconcile settles it. Without leader election, ``Unfenced`` always passes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.errors import TemporaryError


@dataclass(frozen=True, slots=True)
class FencingToken:
    """One leadership term: who holds the Lease, and how many times it had changed hands then."""

    holder: str
    transitions: int

    def as_detail(self) -> dict[str, Any]:
        return {"holder": self.holder, "transitions": self.transitions}

    @classmethod
    def from_detail(cls, value: Any) -> FencingToken | None:
        """The token stored in an intent's ``detail``; None if there is none (an intent from before fencing)."""
        if not isinstance(value, Mapping) or "holder" not in value:
            return None
        return cls(str(value["holder"]), int(value.get("transitions") or 0))

    def __str__(self) -> str:
        return f"{self.holder}#{self.transitions}"


class NotLeaderError(TemporaryError):
    """This replica does not (or no longer provably) hold the Lease: the write was not made.

    Temporary for the system, not for this replica: the new leader picks the work up.
    Never retried locally (``retriable`` is False), since waiting would not make us leader.
    """

    retriable = False

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="not_leader")


class Fence(Protocol):
    """What the executor asks before every write to the cluster."""

    async def check(self, expected: FencingToken | None = None) -> FencingToken:
        """The current token if this replica may write now (and it equals ``expected``); else NotLeaderError."""
        ...


class Leadership(Protocol):
    """What a ``LeaseFence`` needs of the elector: the term it believes it holds, and a way to give it up."""

    def held(self) -> FencingToken | None:
        """The token of the current term while the last renewal is fresh; None otherwise."""
        ...

    def demote(self, why: str) -> None:
        """Stop leading at once (the Lease says someone else holds it)."""
        ...


LeaseReader = Callable[[], Awaitable[Mapping[str, Any]]]


def token_of(lease: Mapping[str, Any]) -> FencingToken | None:
    """The Lease's holder and transition count as the API server has them; None if nobody holds it."""
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder:
        return None
    return FencingToken(str(holder), int(spec.get("leaseTransitions") or 0))


class Unfenced:
    """A single replica without leader election: it is always the only writer."""

    def __init__(self, identity: str) -> None:
        self._token = FencingToken(identity, 0)

    async def check(self, expected: FencingToken | None = None) -> FencingToken:
        return self._token


class LeaseFence:
    """Fresh local renewal, then the Lease read from the API server, then fresh again."""

    def __init__(self, leadership: Leadership, read_lease: LeaseReader) -> None:
        self._leadership = leadership
        self._read_lease = read_lease

    def _fresh(self) -> FencingToken:
        held = self._leadership.held()
        if held is None:
            raise NotLeaderError("not the leader: no Lease renewal within the renew deadline")
        return held

    async def check(self, expected: FencingToken | None = None) -> FencingToken:
        held = self._fresh()
        if expected is not None and expected != held:
            raise NotLeaderError(f"fenced: the intent belongs to leadership term {expected}, this one is {held}")
        # A read error (apiserver down) propagates as it is: the write would fail the same way.
        on_server = token_of(await self._read_lease())
        if on_server != held:
            self._leadership.demote(f"the Lease names {on_server or 'no holder'}, not {held}")
            raise NotLeaderError(f"fenced: the Lease is held by {on_server or 'nobody'}, not by term {held}")
        # The read took time (or the process was paused during it): the renewal must still be fresh.
        return self._fresh()
