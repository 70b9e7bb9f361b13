"""Retention: finished instances are purged after a while, as Cloudflare keeps them for a time.

Host side, one task on the engine's event loop, given only the store and the clock. Every
`interval` it deletes instances that are complete, errored or terminated and were last updated
more than `retention` seconds ago (with their steps and events), a batch at a time. Unfinished
instances are never touched, however old; `delete` stays for removing one at once. On several
hosts each one purges; the store's delete is safe when they overlap.

Failures: a store error is logged and tried again on the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dynworkers.engine.scheduler import Clock
from dynworkers.engine.store import Store

log = logging.getLogger("dynworkers.engine")

#: seven days, Cloudflare's default for finished instances
DEFAULT_RETENTION_S = 7 * 86_400.0
#: instances one purge deletes in one transaction: small, since a store may run its
#: transactions on the event loop (SQLite at durability "process") and an instance may hold
#: thousands of steps; the purge goes on batch after batch, other work between
BATCH = 20


class Retention:
    def __init__(self, store: Store, clock: Clock, retention: float | None) -> None:
        if retention is not None and retention <= 0:
            raise ValueError("retention must be > 0 seconds, or None to keep every instance")
        self.store = store
        self.clock = clock
        self.retention = retention
        self.purged = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        assert self.retention is not None
        return min(max(self.retention / 10, 1.0), 600.0)

    def start(self) -> None:
        if self.retention is not None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge_once(self) -> int:
        """Delete every finished instance past the retention; return how many."""
        if self.retention is None:
            return 0
        before = self.clock.now() - self.retention
        total = 0
        while True:
            count = await self.store.purge_finished(before, BATCH)
            total += count
            if count < BATCH:
                break
        self.purged += total
        return total

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                purged = await self.purge_once()
            except Exception as exc:
                log.warning("could not purge finished instances (%s); trying again", exc)
                continue
            if purged:
                log.info("purged %d finished instances older than the retention", purged)
