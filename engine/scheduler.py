"""When instances run: timers, ready queues served fairly per tenant, bounded concurrency.

Host side, on the engine's event loop; plain data, no locks. An instance is either in a ready
queue (its tenant's), on the timer heap (hibernating until `wake_at`), running, or unknown here
(paused, finished, or waiting for an event with no timeout). Tenants with ready work are served
round-robin, one instance per turn, so one tenant's ten thousand instances do not starve
another's one. At most `max_running` wake-ups run at once.

The clock is injectable: tests move a `ManualClock` forward instead of waiting. The timer heap
uses lazy deletion: a stale entry (the instance was rescheduled or cancelled) is skipped. One
task waits for the earliest timer (a new earlier one cuts its wait short); when it wakes, every
timer due by then is made ready in wake_at order in that one loop turn, so the wake-ups it
starts together are claimed in one store transaction (engine.claims).

Memory per hibernating instance: a heap entry and a dict entry (about 135 bytes) besides its id;
tenant keys are interned, so fifty thousand instances of five tenants hold five tenant strings.

A wake-up that raises is logged and dropped; the store still holds the instance, so the next
restart (or the next event) brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger("dynworkers.engine")


class Clock:
    """Wall-clock time in epoch seconds, and a wait that a kick can cut short."""

    def now(self) -> float:
        return time.time()

    async def wait(self, delay: float | None, kick: asyncio.Event) -> None:
        if delay is not None and delay <= 0:
            return
        timer = None
        if delay is not None:
            timer = asyncio.get_running_loop().call_later(delay, kick.set)
        try:
            await kick.wait()
        finally:
            if timer is not None:
                timer.cancel()


class ManualClock(Clock):
    """A clock that moves only when told: `advance(seconds)` wakes every timer that is due."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.time = start
        self._kicks: set[asyncio.Event] = set()

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds
        for kick in self._kicks:
            kick.set()

    async def wait(self, delay: float | None, kick: asyncio.Event) -> None:
        if delay is not None and delay <= 0:
            return
        self._kicks.add(kick)
        try:
            await kick.wait()
        finally:
            self._kicks.discard(kick)


Run = Callable[[str, float], Awaitable[None]]


class Scheduler:
    def __init__(self, run: Run, clock: Clock, max_running: int) -> None:
        if max_running < 1:
            raise ValueError("max_running must be >= 1")
        self._run = run
        self.clock = clock
        self.max_running = max_running
        self._ready: dict[str, deque[tuple[str, float]]] = {}
        self._turns: deque[str] = deque()  # tenants with ready work, in round-robin order
        self._queued: dict[str, str] = {}  # instance id -> tenant key, for ids in a ready queue
        self.running: dict[str, asyncio.Task[None]] = {}
        self._again: dict[str, str] = {}  # made ready while running: run again after
        self._timers: list[tuple[float, str, str]] = []
        self._wake_at: dict[str, float] = {}
        self._kick = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self.closed = False

    # --- queues ----------------------------------------------------------------------------------

    def ready(self, instance_id: str, tenant: str | None, due: float | None = None) -> None:
        """Run the instance as soon as its tenant's turn and a slot come."""
        key = sys.intern(tenant) if tenant else ""
        self._wake_at.pop(instance_id, None)
        if instance_id in self.running:
            self._again[instance_id] = key
            return
        if instance_id in self._queued or self.closed:
            return
        self._queued[instance_id] = key
        queue = self._ready.get(key)
        if queue is None:
            queue = self._ready[key] = deque()
            self._turns.append(key)
        queue.append((instance_id, self.clock.now() if due is None else due))
        self._pump()

    def at(self, instance_id: str, tenant: str | None, wake_at: float) -> None:
        """Run the instance at `wake_at` (epoch seconds)."""
        if self.closed:
            return
        self._queued.pop(instance_id, None)
        self._wake_at[instance_id] = wake_at
        heapq.heappush(self._timers, (wake_at, instance_id, sys.intern(tenant) if tenant else ""))
        if self._timers[0][1] == instance_id:
            self._kick.set()  # a new earliest timer

    def cancel(self, instance_id: str) -> None:
        """Forget the instance's timer and ready entry (a running wake-up is fenced elsewhere)."""
        self._wake_at.pop(instance_id, None)
        self._queued.pop(instance_id, None)
        self._again.pop(instance_id, None)

    def _pump(self) -> None:
        while len(self.running) < self.max_running and self._turns:
            key = self._turns.popleft()
            queue = self._ready[key]
            instance_id, due = queue.popleft()
            if queue:
                self._turns.append(key)
            else:
                del self._ready[key]
            if self._queued.get(instance_id) != key:
                continue  # cancelled or moved to a timer since it was queued
            del self._queued[instance_id]
            task = asyncio.get_running_loop().create_task(self._guarded(instance_id, due))
            self.running[instance_id] = task

    async def _guarded(self, instance_id: str, due: float) -> None:
        try:
            await self._run(instance_id, due)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "wake-up of instance %r failed; it resumes on the next restart", instance_id
            )
        finally:
            self.running.pop(instance_id, None)
            again = self._again.pop(instance_id, None)
            if again is not None and not self.closed:
                self.ready(instance_id, again)
            if not self.closed:
                self._pump()

    # --- timers ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._timer_task = asyncio.get_running_loop().create_task(self._timer_loop())

    async def _timer_loop(self) -> None:
        while True:
            self._kick.clear()
            now = self.clock.now()
            while self._timers and self._timers[0][0] <= now:
                wake_at, instance_id, key = heapq.heappop(self._timers)
                if self._wake_at.get(instance_id) == wake_at:
                    del self._wake_at[instance_id]
                    self.ready(instance_id, key, due=wake_at)
            delay = self._timers[0][0] - now if self._timers else None
            await self.clock.wait(delay, self._kick)

    @property
    def waiting(self) -> int:
        return len(self._wake_at)

    @property
    def queued(self) -> int:
        return len(self._queued)

    async def close(self) -> None:
        self.closed = True
        tasks = list(self.running.values())
        if self._timer_task is not None:
            tasks.append(self._timer_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.running.clear()  # a task cancelled before it started never ran its finally
