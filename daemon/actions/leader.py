"""Which replica acts: leader election on a ``coordination.k8s.io`` Lease.

Wraps kubernetes-asyncio's ``LeaderElection`` with a ``LeaseLock`` (the same
protocol as client-go: the holder renews ``renewTime``; a standby takes the
Lease once it has not changed for ``leaseDuration``). ``is_leader`` and the
``elected`` event tell the rest of the daemon whether to execute actions;
``rollbackd_leader`` exports it. A graceful ``stop()`` releases the Lease so a
standby takes over at its next retry instead of after the lease duration.
Without leader election (disabled, or no cluster) this replica always leads.
"""

from __future__ import annotations

import asyncio
import contextlib

from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from daemon.actions.client import KubeApi
from daemon.config import LeaderElectionSettings
from daemon.errors import ConfigError, RollbackdError
from daemon.logs import get_logger
from daemon.metrics import IS_LEADER

log = get_logger(__name__)


class LeaderElector:
    """``await run()`` campaigns until ``stop()``; ``is_leader`` while this replica holds the Lease."""

    def __init__(self, api: ApiClient | None, settings: LeaderElectionSettings, identity: str) -> None:
        self.api = api
        self.settings = settings
        self.identity = identity
        self.enabled = settings.enabled and api is not None
        self.elected = asyncio.Event()
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
            self._set(True)

    @property
    def is_leader(self) -> bool:
        return self.elected.is_set()

    def _set(self, leading: bool) -> None:
        if leading != self.is_leader:
            log.info("leader.changed", identity=self.identity, leader=leading, lease=self.settings.lease_name)
        if leading:
            self.elected.set()
        else:
            self.elected.clear()
        IS_LEADER.set(1 if leading else 0)

    def _config(self) -> electionconfig.Config:
        lease, renew, retry = self._durations

        async def started() -> None:
            self._set(True)

        async def stopped() -> None:
            self._set(False)

        assert self.api is not None  # noqa: S101 - only called when enabled, which implies a client
        lock = LeaseLock(self.settings.lease_name, self.settings.namespace, self.identity, self.api)
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
            self._election = asyncio.create_task(leaderelection.LeaderElection(self._config()).run())
            try:
                await self._election
            except asyncio.CancelledError:
                if not self._stopping.is_set():
                    raise
            except Exception as exc:  # noqa: BLE001 - connection errors escape the library; campaign again
                log.warning("leader.election_error", identity=self.identity, error=f"{type(exc).__name__}: {exc}")
            finally:
                self._set(False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), retry)

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
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.settings.namespace}/leases/{self.settings.lease_name}"
        # Read-modify-write with the resourceVersion: a conflict means someone else holds it now.
        kube = KubeApi(self.api, 5.0)
        try:
            lease = await kube.request("GET", path, "read lease")
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity", None)
            spec["leaseDurationSeconds"] = 1
            await kube.request("PUT", path, "release lease", {**lease, "spec": spec})
        except RollbackdError as exc:
            log.warning("leader.release_failed", identity=self.identity, error=str(exc))
