"""Cron triggers: each tenant's `triggers.crons` runs its `scheduled` handler, once per tick.

Host side, one task on the daemon's event loop. Owns, per (tenant, cron expression), the next
time it fires; the ticks themselves are claimed in runtime.daemon.cron_store, so that when
several hosts share a PostgreSQL store each tick runs on one of them only.

Expressions are Cloudflare's: five fields (minute, hour, day of month, month, day of week), in
UTC, parsed by croniter (`validate` refuses anything else with the reason). Every `INTERVAL_S`
the scheduler reads which tenants declare crons (their served wrangler config), and for each
tick that came due claims it and calls the tenant's
`scheduled(controller, env, ctx)` with `{"cron": expr, "scheduled_time": epoch ms}`. Ticks run
concurrently with requests and with each other; one that raises is logged to the tenant's log.

Ticks missed while the daemon was down (the rule): when a schedule is first seen by a daemon
start and ticks fell due between its last claimed tick (or the time it was first seen, for one
that never fired) and now, the latest of them runs once, at start; the earlier ones are skipped,
as a cron job run late would. A schedule seen for the first time fires from its next tick.
If the loop itself falls behind (a busy machine), it likewise runs only the latest tick due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from croniter import croniter

from dynworkers.runtime.daemon.cron_store import CronStore

log = logging.getLogger("dynworkers.crons")

#: seconds between two looks for due ticks (cron's granularity is a minute)
INTERVAL_S = 1.0
#: how far the loop walks forward through ticks it fell behind on before taking the latest
MAX_WALK = 10_000

RunTick = Callable[[str, str, int], Awaitable[None]]


def validate(expression: str) -> str | None:
    """Why `expression` is not a cron trigger Cloudflare would accept, or None."""
    if len(expression.split()) != 5:
        return (
            f"cron {expression!r} must have 5 fields (minute hour day-of-month month "
            "day-of-week), as Cloudflare's"
        )
    if not croniter.is_valid(expression):
        return f"cron {expression!r} is not a valid cron expression"
    return None


def previous_tick(expression: str, now: float) -> float:
    """The latest tick at or before `now` (epoch seconds, UTC)."""
    candidate = float(croniter(expression, now).get_prev(float))
    following = float(croniter(expression, candidate).get_next(float))
    return following if following <= now else candidate


def next_tick(expression: str, now: float) -> float:
    """The first tick after `now`."""
    return float(croniter(expression, now).get_next(float))


class CronScheduler:
    def __init__(
        self,
        store: CronStore,
        wanted: Callable[[], dict[str, list[str]]],
        run: RunTick,
        host: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        #: tenant -> its cron expressions, as served now
        self.wanted = wanted
        self.run = run
        self.host = host
        self.clock = clock
        #: (tenant, cron) -> the epoch second it fires next
        self.next: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.store.open()
        await self.check()  # missed ticks run now, not a second later
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.store.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL_S)
            try:
                await self.check()
            except Exception:  # the store is down or a tenant's config went bad: next time
                log.exception("cron check failed; trying again in %s s", INTERVAL_S)

    async def check(self) -> list[asyncio.Task[None]]:
        """Follow the served crons, claim and start every tick due; the ticks started."""
        now = self.clock()
        wanted = {
            (tenant, cron)
            for tenant, crons in self.wanted().items()
            for cron in crons
            if validate(cron) is None
        }
        for key in set(self.next) - wanted:
            del self.next[key]
        started = []
        for tenant, cron in sorted(wanted - set(self.next)):
            last_ms = await self.store.last(tenant, cron, int(now * 1000))
            due = previous_tick(cron, now)
            if due * 1000 > last_ms:  # missed while down: the latest one runs, once
                started.append(self._start(tenant, cron, due))
            self.next[(tenant, cron)] = next_tick(cron, now)
        for (tenant, cron), when in sorted(self.next.items()):
            if when > now:
                continue
            started.append(self._start(tenant, cron, self._latest(cron, when, now)))
            self.next[(tenant, cron)] = next_tick(cron, now)
        return started

    @staticmethod
    def _latest(cron: str, when: float, now: float) -> float:
        """The latest tick from `when` up to `now`."""
        iterator = croniter(cron, when)
        for _ in range(MAX_WALK):
            following = iterator.get_next(float)
            if following > now:
                return when
            when = following
        return previous_tick(cron, now)

    def _start(self, tenant: str, cron: str, when: float) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._tick(tenant, cron, int(when * 1000)))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _tick(self, tenant: str, cron: str, scheduled_ms: int) -> None:
        try:
            if not await self.store.claim(tenant, cron, scheduled_ms, self.host):
                return  # another host runs it
        except Exception as exc:
            log.error("tenant %r: cron %r: the tick could not be claimed: %s", tenant, cron, exc)
            return
        log.info("tenant %r: cron %r fired (scheduled %d)", tenant, cron, scheduled_ms)
        try:
            await self.run(tenant, cron, scheduled_ms)
        except Exception as exc:
            log.error("tenant %r: cron %r: scheduled failed: %s", tenant, cron, exc)
