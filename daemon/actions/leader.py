"""Which replica acts: leader election on a ``coordination.k8s.io`` Lease, with a deadline.

Wraps kubernetes-asyncio's ``LeaderElection`` (the same protocol as client-go:
the holder renews ``renewTime``; a standby takes the Lease once it has not
changed for ``leaseDuration``). Leadership is a lease with a deadline, not a
flag: ``is_leader`` holds only while the last successful acquire or renew is
younger than ``renew_deadline`` on the monotonic clock, and a watchdog drops
leadership at that moment, before the Lease can expire (``renew_deadline`` <
``lease_duration``), so the leadership-gated workers stop in time. The lock
keeps ``leaseTransitions`` (the library does not), which with the holder makes
the ``FencingToken`` that ``fence()`` checks before every write to the cluster.
``known`` says whether a campaign round has completed (acquired, or observed
another holder): that is what ``/readyz`` needs, leader or standby.
``rollbackd_leader`` exports ``is_leader``. A graceful ``stop()`` releases the
Lease so a standby takes over at its next retry instead of after the lease
duration. Without leader election (disabled, or no cluster) this replica
always leads and its fence always passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from daemon.actions.client import KubeApi
from daemon.actions.fence import Fence, FencingToken, LeaseFence, Unfenced
from daemon.config import LeaderElectionSettings
from daemon.errors import ConfigError, RollbackdError
from daemon.logs import get_logger
from daemon.metrics import IS_LEADER

log = get_logger(__name__)

LEASE_READ_TIMEOUT_S = 5.0
Monotonic = Callable[[], float]
# What the library lets escape from a lock call; caught so that it retries until the renew deadline.
_UNANSWERED = (aiohttp.ClientError, TimeoutError, OSError)


def _refusal(exc: ApiException | None, unanswered: str = "") -> ApiException:
    """An ``ApiException`` whose body the library can parse (it reads ``code`` from it)."""
    if exc is None:
        exc = ApiException(status=0, reason=unanswered)
    try:
        json.loads(exc.body or b"")["code"]
    except (TypeError, ValueError, KeyError):
        exc.body = json.dumps({"code": int(exc.status or 0)}).encode()
    return exc


class TermLease(LeaseLock):
    """A ``LeaseLock`` that counts terms in ``leaseTransitions`` and reports every read and write.

    ``on_read(holder)`` after each successful read of the Lease; ``on_written(token, started)``
    after each successful create/update, with the monotonic time at which the write was sent:
    the standby measures the lease from when it sees the change, which is no earlier.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        identity: str,
        api: ApiClient,
        *,
        on_read: Callable[[str | None], None],
        on_written: Callable[[FencingToken, float], None],
        monotonic: Monotonic,
    ) -> None:
        super().__init__(name, namespace, identity, api)
        self._on_read = on_read
        self._on_written = on_written
        self._monotonic = monotonic

    async def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            found, record = await super().get(name, namespace)
        except _UNANSWERED as exc:
            return False, _refusal(None, f"{type(exc).__name__}: {exc}")
        if not found:
            return False, _refusal(record if isinstance(record, ApiException) else None, "read failed")
        if self.lease_reference is not None:
            spec = self.lease_reference.spec
            self._on_read(spec.holder_identity if spec is not None else None)
        return found, record

    async def create(self, name: str, namespace: str, election_record: LeaderElectionRecord) -> bool:
        spec = self.update_lease(election_record)
        spec.lease_transitions = 0
        body = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name=name), spec=spec)
        started = self._monotonic()
        try:
            await self.api_instance.create_namespaced_lease(namespace, body)
        except (ApiException, *_UNANSWERED) as exc:
            log.warning("leader.create_failed", identity=self.identity, error=type(exc).__name__)
            return False
        self._on_written(FencingToken(self.identity, 0), started)
        return True

    async def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        # As client-go: the count rises whenever the holder changes, so each term has its own token.
        if self.lease_reference is None:
            return False
        if self.lease_reference.spec is None:
            self.lease_reference.spec = k8s.V1LeaseSpec()
        spec = self.lease_reference.spec
        transitions = int(spec.lease_transitions or 0)
        if spec.holder_identity != updated_record.holder_identity:
            transitions += 1
        spec.lease_transitions = transitions
        started = self._monotonic()
        # The replace carries the resourceVersion read by get(): a concurrent writer makes it fail.
        try:
            if not await super().update(name, namespace, updated_record):
                return False
        except _UNANSWERED as exc:
            log.warning("leader.update_failed", identity=self.identity, error=f"{type(exc).__name__}: {exc}")
            return False
        self._on_written(FencingToken(self.identity, transitions), started)
        return True


class LeaderElector:
    """``await run()`` campaigns until ``stop()``; ``is_leader`` while the last renewal is fresh."""

    def __init__(
        self,
        api: ApiClient | None,
        settings: LeaderElectionSettings,
        identity: str,
        *,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.api = api
        self.settings = settings
        self.identity = identity
        self.enabled = settings.enabled and api is not None
        self.elected = asyncio.Event()
        self.not_leading = asyncio.Event()  # the complement of ``elected``, for workers that wait for the loss
        self.not_leading.set()
        self.known = not self.enabled
        self._monotonic = monotonic
        self._term: FencingToken | None = None
        self._renewed_at = float("-inf")
        self._stopping = asyncio.Event()
        self._election: asyncio.Task[None] | None = None
        # The library formats durations as strings and parses them back with int(): whole seconds only.
        self._durations = (
            max(1, round(settings.lease_duration_s)),
            max(1, round(settings.renew_deadline_s)),
            max(1, round(settings.retry_period_s)),
        )
        if self.enabled:
            self._config()  # fail at construction, not in the background task
        else:
            self._term = FencingToken(identity, 0)
            self._set(True)

    @property
    def renew_deadline_s(self) -> float:
        return float(self._durations[1])

    def held(self) -> FencingToken | None:
        """The current term's token while this replica leads and renewed within the renew deadline."""
        if not self.enabled:
            return self._term if self.elected.is_set() else None
        if not self.elected.is_set() or self._monotonic() - self._renewed_at >= self.renew_deadline_s:
            return None
        return self._term

    @property
    def is_leader(self) -> bool:
        return self.held() is not None

    def fence(self) -> Fence:
        """What the executor checks before each write: the Lease itself, or nothing without election."""
        if not self.enabled:
            return Unfenced(self.identity)
        return LeaseFence(self, self._read_lease)

    def demote(self, why: str) -> None:
        """Stop leading now and campaign afresh (the Lease proved that another replica holds it)."""
        if not self.elected.is_set():
            return
        log.warning("leader.demoted", identity=self.identity, why=why)
        self._renewed_at = float("-inf")
        self._set(False)
        if self._election is not None and not self._election.done():
            self._election.cancel()

    def _set(self, leading: bool) -> None:
        if leading != self.elected.is_set():
            log.info(
                "leader.changed", identity=self.identity, leader=leading, lease=self.settings.lease_name,
                term=str(self._term) if leading else None,
            )  # fmt: skip
        if leading:
            self.elected.set()
            self.not_leading.clear()
        else:
            self.elected.clear()
            self.not_leading.set()
        IS_LEADER.set(1 if leading else 0)

    # What the lock reports. A write of the Lease naming us is what makes us leader, so
    # leadership starts (and is kept fresh) here rather than in the library's callback.

    def observed(self, holder: str | None) -> None:
        """The Lease was read and names ``holder``: another holder is a completed round for a standby."""
        if holder and holder != self.identity:
            self.known = True

    def renewed(self, token: FencingToken, at: float) -> None:
        """The Lease was acquired or renewed for ``token`` by a write sent at monotonic time ``at``."""
        self._term, self._renewed_at = token, at
        self.known = True
        self._set(True)

    def _config(self) -> electionconfig.Config:
        lease, renew, retry = self._durations

        async def started() -> None:
            return  # ``renewed`` already made us leader when the acquiring write succeeded

        async def stopped() -> None:
            self._set(False)

        assert self.api is not None  # noqa: S101 - only called when enabled, which implies a client
        lock = TermLease(
            self.settings.lease_name, self.settings.namespace, self.identity, self.api,
            on_read=self.observed, on_written=self.renewed, monotonic=self._monotonic,
        )  # fmt: skip
        try:
            return electionconfig.Config(lock, lease, renew, retry, started, stopped)
        except ValueError as exc:
            raise ConfigError(f"kubernetes.leader_election: {exc}") from None

    async def run(self) -> None:
        """Campaign, lead, and campaign again after losing the Lease, until ``stop()``."""
        if not self.enabled:
            await self._stopping.wait()
            return
        retry = self._durations[2]
        while not self._stopping.is_set():
            election = asyncio.create_task(leaderelection.LeaderElection(self._config()).run())
            self._election = election
            watchdog = asyncio.create_task(self._watch_deadline())
            try:
                # wait(), not await: a demotion cancels the election task, which must not cancel us.
                await asyncio.wait({election})
            finally:
                watchdog.cancel()
                election.cancel()
                await asyncio.gather(watchdog, election, return_exceptions=True)
                self._set(False)
            if not election.cancelled() and (exc := election.exception()) is not None:
                # Connection errors escape the library; campaign again.
                log.warning("leader.election_error", identity=self.identity, error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), retry)

    async def _watch_deadline(self) -> None:
        """Drop leadership the moment the renew deadline passes without a renewal (client-go's rule)."""
        while True:
            await self.elected.wait()
            left = self._renewed_at + self.renew_deadline_s - self._monotonic()
            if left <= 0:
                log.warning(
                    "leader.renew_deadline_passed", identity=self.identity,
                    since_renew_s=round(self._monotonic() - self._renewed_at, 2),
                )  # fmt: skip
                self.demote("no successful renewal within the renew deadline")
                return
            await asyncio.sleep(left)

    async def _read_lease(self) -> Mapping[str, Any]:
        assert self.api is not None  # noqa: S101 - the fence exists only when enabled
        return await KubeApi(self.api, LEASE_READ_TIMEOUT_S).request("GET", self._lease_path, "read lease")

    @property
    def _lease_path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.settings.namespace}/leases/{self.settings.lease_name}"

    async def stop(self) -> None:
        """Stop campaigning; release the Lease if held, so a standby need not wait for it to expire."""
        was_leader = self.enabled and self.is_leader
        self._stopping.set()
        if self._election is not None and not self._election.done():
            self._election.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._election
        if was_leader:
            await self._release()
        self._set(False)

    async def _release(self) -> None:
        assert self.api is not None  # noqa: S101 - enabled implies a client
        # Read-modify-write with the resourceVersion: a conflict means someone else holds it now.
        kube = KubeApi(self.api, LEASE_READ_TIMEOUT_S)
        try:
            lease = await kube.request("GET", self._lease_path, "read lease")
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity", None)
            spec["leaseDurationSeconds"] = 1
            await kube.request("PUT", self._lease_path, "release lease", {**lease, "spec": spec})
        except RollbackdError as exc:
            log.warning("leader.release_failed", identity=self.identity, error=str(exc))
