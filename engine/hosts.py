"""This host's place among the engines sharing one store: its lease, and the safety-net poll.

Host side, two tasks on the engine's event loop. `HostLease` registers the host in the store,
renews its lease every third of the lease, and every `poll_interval` asks the store for due
instances that no live host owns (never claimed, released by a host whose lease lapsed, or due on
a timer that only a dead host held) and hands them to the scheduler, at most as many as the host
has free slots. The scheduler's wake-up then claims each one (`Store.claim`); a claim that loses to
another host is a no-op. Notifications (`Store.notify`) make the poll a safety net, not the path.

The poll runs once at start (a new host takes its share of orphans at once) and then every
`poll_interval`, except while it is draining a backlog: a poll that filled every free slot (a
dead host's thousand sleeping instances, say) looks again after `BACKLOG_POLL_S`, so the backlog
drains as fast as this host's wake-ups finish rather than one batch per interval. A look while
no slot is free costs nothing (no query).

Failures: a store that does not answer is logged and tried again on the next tick; the tasks
never end on their own. A host that could not renew within its lease loses its claims to others,
and its running wake-ups are fenced out by the generation their claims moved on.

Single host on SQLite: the same code runs; nobody else claims, so it finds only what its own
scheduler already holds (the claim makes the duplicate a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from dynworkers.engine.scheduler import Clock, Scheduler
from dynworkers.engine.store import Store

log = logging.getLogger("dynworkers.engine")

#: seconds between polls while a backlog of orphans drains (see the module doc)
BACKLOG_POLL_S = 0.05


def new_host_id() -> str:
    """`<hostname>-<pid>-<random>`: unique per process start, readable in `/_/stats`."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class HostLease:
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        clock: Clock,
        host: str,
        *,
        address: str = "",
        lease: float = 5.0,
        poll_interval: float = 1.0,
    ) -> None:
        if lease <= 0 or poll_interval <= 0:
            raise ValueError("lease and poll_interval must be > 0 seconds")
        self.store = store
        self.scheduler = scheduler
        self.clock = clock
        self.host = host
        self.address = address
        self.lease = lease
        self.poll_interval = poll_interval
        self.taken_over = 0  # instances this host found orphaned and queued
        self.backlog = False  # the last poll that asked filled every free slot
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        now = self.clock.now()
        await self.store.register_host(self.host, self.address, now, now + self.lease)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._renew()), loop.create_task(self._poll())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.store.renew_host(self.host, self.clock.now() + self.lease)
            except Exception as exc:
                log.warning("could not renew host %s's lease (%s); trying again", self.host, exc)

    async def _poll(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception as exc:
                self.backlog = False
                log.warning("could not look for orphaned instances (%s); trying again", exc)
            await asyncio.sleep(BACKLOG_POLL_S if self.backlog else self.poll_interval)

    async def poll_once(self) -> int:
        """Queue the due instances nobody live owns, up to the free slots; return how many."""
        free = self.scheduler.max_running - len(self.scheduler.running) - self.scheduler.queued
        if free <= 0:
            return 0
        found = await self.store.claimable(self.host, self.clock.now(), free)
        self.backlog = len(found) >= free
        queued = 0
        for instance_id, tenant in found:
            if instance_id in self.scheduler.running:
                continue
            self.scheduler.ready(instance_id, tenant)
            queued += 1
        self.taken_over += queued
        return queued
