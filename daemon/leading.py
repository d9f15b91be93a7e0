"""The work only the leader does, started and stopped in one place as leadership comes and goes.

Part of the lifecycle (``app.py``). Every replica accepts webhooks, API calls
and Kafka deploy events into the shared store; only the replica holding the
Lease dispatches the inbox and drives rollbacks. On each acquisition (not
only the first after start-up) the new leader first settles what a previous
leader left — interrupted rollbacks from the cluster's state, then incidents
to re-drive — and then dispatches. On a loss (the elector drops leadership at
its renew deadline, before the Lease can expire) the dispatcher stops and the
rollback drivers are cancelled at once; their fence would refuse any write
anyway, and the store keeps their state for the next leader. The timers need
no starting: each pass asks whether this replica leads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from daemon.actions.leader import LeaderElector
from daemon.errors import RollbackdError
from daemon.logs import get_logger
from daemon.wiring import Components

log = get_logger(__name__)

RECOVERY_RETRY_S = 2.0


async def recover(c: Components) -> None:
    """Settle interrupted rollbacks from the cluster's state, then re-drive the incidents left mid-way.

    The executor's intent log says which undo was planned or applied; ``reconcile`` reads each
    Deployment and records what really happened, so re-driving an incident never undoes twice.
    """
    for result in await c.executor.reconcile():
        log.warning("reconciled interrupted rollback", intent=result.intent_id, detail=result.detail)
    await c.incidents.resume()


async def lead_always(c: Components) -> None:
    """A single replica: recover (retrying while the store or the apiserver is down) and dispatch, until stopped."""
    recovering = asyncio.create_task(_recover_until_done(c, lambda: True), name="recover")
    try:
        await c.dispatcher.run()
    finally:
        recovering.cancel()
        await asyncio.gather(recovering, return_exceptions=True)


async def lead_while_elected(c: Components, leader: LeaderElector) -> None:
    """Each term: recover and dispatch side by side until the term ends; then stop both and the drivers."""
    while True:
        await leader.elected.wait()
        log.info("leading: recovering, processing the inbox")
        # Recovery may wait on the apiserver; alerts need only the store, so they do not wait for it.
        recovering = asyncio.create_task(_recover_until_done(c, lambda: leader.is_leader), name="recover")
        run = asyncio.create_task(c.dispatcher.run(), name="dispatcher")
        lost = asyncio.create_task(leader.not_leading.wait(), name="leadership-lost")
        try:
            await asyncio.wait({run, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            recovering.cancel()
            await asyncio.gather(recovering, return_exceptions=True)
        if run.done():
            run.result()  # a crash propagates to the guarded task
            return
        log.warning("leadership lost: no longer processing the inbox or driving rollbacks")
        await c.dispatcher.stop()
        await run
        await c.incidents.close()


async def _recover_until_done(c: Components, leading: Callable[[], bool]) -> None:
    """Recovery for this term, retried while the store or the apiserver is down and this replica still leads."""
    while leading():
        try:
            await recover(c)
        except RollbackdError as exc:
            log.warning("recovery failed, retrying", error=str(exc), reason=exc.reason)
            await asyncio.sleep(RECOVERY_RETRY_S)
        else:
            return
