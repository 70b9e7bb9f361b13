"""The pool: spares booted ahead of need, and the specialised sandboxes of each tenant.

Host side, on the supervisor's event loop. It owns every `SandboxHandle`: boots spares through the
zygote, specialises a spare for a tenant on a cold start, keeps at most `max_sandboxes`
specialised in all, and evicts with a recorded reason (capacity, idle, memory, deadline, crash,
protocol, shutdown, manual, redeploy). The process table changes only on evidence: a handle is
dead when the zygote reports its exit, or when the pool kills it.

A busy tenant has several sandboxes (up to `max_sandboxes_per_tenant`), each running one call
at a time; `runtime.tenant_sandboxes` holds the rule that picks one for a call. Every limit
applies per sandbox: the LRU order (capacity eviction takes the least recently used sandbox that
no call holds, so a tenant's older sandbox goes before its newer one), the idle TTL, and the
memory ceiling (`runtime.memory_watch`). A redeploy retires all of the tenant's sandboxes of the
old version: idle ones end at once, busy ones when their call (and the calls queued for that
version) are done.

When the pool is full and every sandbox in it is held, a tenant with no sandbox waits for one to
be released, and gets `PoolBusy` at its deadline. A boot failure raises `BootError` to the call
that needed the sandbox and nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from typing import Any

import zmq

from dynworkers.loader import CompiledWorker
from dynworkers.runtime import memory_watch, protocol
from dynworkers.runtime.bindings import BindingRateLimit
from dynworkers.runtime.errors import PoolBusy, SupervisorClosed
from dynworkers.runtime.handle import SandboxHandle
from dynworkers.runtime.metrics import PoolMetrics
from dynworkers.runtime.sandbox_table import SandboxTable
from dynworkers.runtime.tenant_sandboxes import REQUEST, TenantSandboxes
from dynworkers.runtime.zygote_client import ZygoteClient

#: Seconds a sandbox must have sat idle before another tenant's scale-out may evict it; a
#: tenant with no sandbox at all may evict any idle one (least recently used first).
SCALE_OUT_EVICTS_IDLE_S = 1.0


class _GaveUp(Exception):
    """A queued call's deadline passed before a sandbox came free."""


def _give_up(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_GaveUp())


class Pool(SandboxTable):
    def __init__(
        self,
        *,
        zygote: ZygoteClient,
        context: zmq.Context[zmq.Socket[bytes]],
        run_dir: str,
        max_sandboxes: int,
        spares: int,
        boot_timeout: float,
        max_frame: int,
        max_concurrent_boots: int,
        metrics: PoolMetrics,
        rate_limit: BindingRateLimit | None = None,
        max_sandboxes_per_tenant: int = 1,
    ) -> None:
        super().__init__(
            zygote=zygote,
            context=context,
            run_dir=run_dir,
            spares=spares,
            boot_timeout=boot_timeout,
            max_frame=max_frame,
            max_concurrent_boots=max_concurrent_boots,
            metrics=metrics,
            rate_limit=rate_limit,
        )
        self.max_sandboxes = max_sandboxes
        self.max_per_tenant = max(1, min(max_sandboxes_per_tenant, max_sandboxes))
        #: tenant id -> its sandboxes (the current version's); forgotten when empty
        self.active: dict[str, TenantSandboxes] = {}
        #: every live specialised sandbox by id, least recently used first
        self.lru: OrderedDict[int, SandboxHandle] = OrderedDict()
        self.reserved = 0  # cold starts that hold a slot but are not yet in `lru`
        self._room: list[asyncio.Future[None]] = []  # cold starts waiting for a free slot
        self._ever_served: OrderedDict[str, None] = OrderedDict()
        self._swept_at = 0.0  # monotonic time of the last sweep

    # --- acquiring -------------------------------------------------------------------------------

    async def acquire(
        self, worker: CompiledWorker, deadline: float, kind: int = REQUEST
    ) -> tuple[SandboxHandle, bool]:
        """A sandbox of the worker's tenant, held by the caller alone until it calls `release`;
        and whether it was a cold start. `kind` is REQUEST or WAKEUP (see tenant_sandboxes)."""
        if self.closed:
            raise SupervisorClosed("the supervisor is closed")
        group = self.active.get(worker.worker_id)
        if group is None or group.version != worker.version:
            group = self._new_group(worker, group)
        handle = group.take_idle(kind)
        if handle is not None:  # warm: the fast path
            self.lru.move_to_end(handle.id)
            self.metrics.warm += 1
            return handle, False
        return await self._acquire_busy(group, worker, deadline, kind)

    def _new_group(self, worker: CompiledWorker, old: TenantSandboxes | None) -> TenantSandboxes:
        if old is not None:  # a redeploy: new calls go to fresh sandboxes with the new code
            old.retired = True
            for handle in list(old.idle):
                self.evict(handle, "redeploy")
            for handle in old.sandboxes:
                handle.retired = True  # busy: ends once its call and the old queue are done
        group = TenantSandboxes(worker.worker_id, worker.version, self.max_per_tenant)
        self.active[worker.worker_id] = group
        return group

    async def _acquire_busy(
        self, group: TenantSandboxes, worker: CompiledWorker, deadline: float, kind: int
    ) -> tuple[SandboxHandle, bool]:
        """No idle sandbox for this call: start one while the tenant is under its cap, else
        queue for the next that comes free (woken with None: something ended, look again)."""
        while True:
            if group.may_grow(kind) and (not group.sandboxes or self._room_for_one()):
                return await self._start(group, worker, deadline, kind), True
            recheck = self._recheck_scale_out(group, kind)
            try:
                handle = await self._queue(group, kind, deadline)
            finally:
                if recheck is not None:
                    recheck.cancel()
            if handle is None:
                if self.closed:
                    raise SupervisorClosed("the supervisor is closed")
                if not group.retired:
                    group = self._rejoin(group)
                handle = group.take_idle(kind)
            if handle is not None:
                self.lru.move_to_end(handle.id)
                self.metrics.warm += 1
                return handle, False

    def _rejoin(self, group: TenantSandboxes) -> TenantSandboxes:
        """The tenant's set of sandboxes for a call woken from its queue. The set may have been
        forgotten while the call waited (its last sandbox ended, and its queue was woken): it
        is the tenant's again, unless a newer call made another set meanwhile, which the call
        then joins (two sets would each allow the tenant's cap, and `evict` and `sandbox_pids`
        see only the active one)."""
        current = self.active.get(group.tenant_id)
        if current is None:
            self.active[group.tenant_id] = group
            return group
        if current is not group and current.version == group.version and group.empty:
            return current
        return group

    def _least_recently_used_idle(self) -> SandboxHandle | None:
        """The sandbox a cold start would evict: the least recently used one not in a call."""
        return next((h for h in self.lru.values() if h.users == 0), None)

    def _room_for_one(self) -> bool:
        """Whether another sandbox for a tenant that has one (a scale-out) would find a free
        slot, or an idle sandbox to evict that has sat idle `SCALE_OUT_EVICTS_IDLE_S` (the one
        `_make_room` takes). A sandbox between two calls is not taken: when several busy
        tenants fill the pool, each would otherwise evict the others' sandboxes the moment
        they are released, and every call would become a cold start."""
        if len(self.lru) + self.reserved < self.max_sandboxes:
            return True
        victim = self._least_recently_used_idle()
        return victim is not None and time.monotonic() - victim.last_used >= SCALE_OUT_EVICTS_IDLE_S

    def _recheck_scale_out(self, group: TenantSandboxes, kind: int) -> asyncio.TimerHandle | None:
        """When a scale-out waits only for an idle sandbox to become old enough to evict, wake
        the tenant's queue at that moment (nothing else would: that sandbox is not the
        tenant's, and sitting idle ends no call)."""
        if not group.may_grow(kind) or not group.sandboxes:
            return None
        victim = self._least_recently_used_idle()
        if victim is None:
            return None
        wait = victim.last_used + SCALE_OUT_EVICTS_IDLE_S - time.monotonic()
        return asyncio.get_running_loop().call_later(max(0.0, wait), group.wake_queue)

    async def _queue(
        self, group: TenantSandboxes, kind: int, deadline: float
    ) -> SandboxHandle | None:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        future: asyncio.Future[SandboxHandle | None] = loop.create_future()
        if remaining > 0:
            group.queue.append((future, kind))
            self.metrics.queued += 1
            timer = loop.call_later(remaining, _give_up, future)
        else:
            _give_up(future)
        try:
            return await future
        except _GaveUp:
            self._leave_queue(group, future, kind)
            raise PoolBusy(
                f"tenant {group.tenant_id!r} kept its sandboxes busy with earlier calls until "
                "this call's deadline; this call did not run: retry, give the tenant's calls "
                "more time, or raise max_sandboxes_per_tenant"
            ) from None
        except asyncio.CancelledError:  # the caller went away; a sandbox handed over meanwhile
            if not future.cancelled() and future.done() and future.exception() is None:
                handed = future.result()  # goes to the next in line
                if handed is not None:
                    self.release(handed)
            self._leave_queue(group, future, kind)
            raise
        finally:
            if remaining > 0:
                timer.cancel()

    def _leave_queue(
        self, group: TenantSandboxes, future: asyncio.Future[SandboxHandle | None], kind: int
    ) -> None:
        """A call that gave up leaves the queue, so that an empty tenant can be forgotten."""
        with contextlib.suppress(ValueError):
            group.queue.remove((future, kind))
        self._forget_if_empty(group)

    async def _start(
        self, group: TenantSandboxes, worker: CompiledWorker, deadline: float, kind: int
    ) -> SandboxHandle:
        """Another sandbox for the tenant, specialised by a task of its own (a caller that goes
        away does not leave it half done: the sandbox is released to the tenant's others)."""
        group.busy[kind] += 1
        group.starting += 1
        pending: asyncio.Future[SandboxHandle] = asyncio.get_running_loop().create_future()
        self._spawn(self._cold_start(group, worker, deadline, kind, pending))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(self._orphan)
            raise

    def _orphan(self, future: asyncio.Future[SandboxHandle]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.release(future.result())

    async def _cold_start(
        self,
        group: TenantSandboxes,
        worker: CompiledWorker,
        deadline: float,
        kind: int,
        result: asyncio.Future[SandboxHandle],
    ) -> None:
        """Specialise a spare for the tenant. The caller's Invoke is pipelined behind the
        Specialise message; a tenant whose modules fail reports it on that Invoke."""
        started = time.perf_counter()
        try:
            await self._make_room(deadline)
        except BaseException as exc:
            self._start_failed(group, kind)
            result.set_exception(exc)
            result.exception()
            return
        handle: SandboxHandle | None = None
        try:
            handle = await self.take_spare()
            handle.tenant_id = group.tenant_id
            handle.worker = worker
            handle.group = group
            handle.kind = kind
            handle.users = 1
            handle.retired = group.retired
            handle.state = "specialised"
            specialised = asyncio.get_running_loop().create_future()
            handle.channel.specialised = specialised
            handle.channel.send(handle.specialise_message(worker))
            alone = not group.sandboxes
            if handle.alive:  # a send can find the channel broken and end it at once
                group.sandboxes.append(handle)
                self.lru[handle.id] = handle
        except BaseException as exc:
            if handle is not None and handle.alive and handle.id not in self.lru:
                self._end(handle, "crash", kill=True)  # taken, never joined the tenant
            self.reserved -= 1
            self._start_failed(group, kind)
            if not result.done():
                result.set_exception(exc)
                result.exception()
        else:
            self.reserved -= 1
            group.starting -= 1
            specialised.add_done_callback(
                functools.partial(self._specialised, handle, started, alone)
            )
            result.set_result(handle)
        finally:
            self._wake_room()  # a failed start frees its slot for a waiter

    def _start_failed(self, group: TenantSandboxes, kind: int) -> None:
        group.starting -= 1
        group.busy[kind] -= 1
        group.wake_queue()  # under its cap again: a queued call may start one
        self._forget_if_empty(group)

    def _specialised(
        self,
        handle: SandboxHandle,
        started: float,
        alone: bool,
        future: asyncio.Future[protocol.Specialised],
    ) -> None:
        if future.cancelled() or future.exception() is not None or future.result().error:
            return  # the caller's Invoke reports the failure; the pool ends the sandbox then
        tenant = handle.tenant_id
        assert tenant is not None
        self.metrics.cold += 1
        latency = time.perf_counter() - started
        self.metrics.boot_latency.append(latency)
        if self.metrics.observers:
            self.metrics.tell("boot", tenant, latency)
        if not alone:
            self.metrics.scale_outs += 1
        elif tenant in self._ever_served:  # its first sandbox since all of them ended
            self.metrics.rehydrations += 1
        self._ever_served[tenant] = None
        if len(self._ever_served) > 100_000:
            self._ever_served.popitem(last=False)

    async def _make_room(self, deadline: float) -> None:
        """Reserve a slot for one cold start, evicting the least recently used idle sandbox
        when the pool is full; wait for a release when every sandbox is held."""
        loop = asyncio.get_running_loop()
        while len(self.lru) + self.reserved >= self.max_sandboxes:
            victim = self._least_recently_used_idle()
            if victim is not None:
                self.evict(victim, "capacity")
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PoolBusy(
                    f"all {self.max_sandboxes} sandboxes are busy; retry later or raise "
                    "max_sandboxes"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._room.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, remaining)
        self.reserved += 1

    def _wake_room(self) -> None:
        waiters, self._room = self._room, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- releasing -------------------------------------------------------------------------------

    def release(self, handle: SandboxHandle) -> None:
        """The caller's call is done: the sandbox goes to the tenant's next queued call, or
        becomes idle (a retired one ends)."""
        handle.users = 0
        handle.last_used = time.monotonic()
        group = handle.group
        assert group is not None
        group.busy[handle.kind] -= 1
        if not handle.alive:
            if group.queue:
                group.wake_queue()  # its share is free again: a queued call may start one
            self._forget_if_empty(group)
            return
        if group.queue and group.hand_over(handle):
            return
        if handle.retired:
            self.evict(handle, "redeploy")
            return
        group.idle.append(handle)
        if self._room:
            self._wake_room()

    def _forget_if_empty(self, group: TenantSandboxes) -> None:
        if group.empty and self.active.get(group.tenant_id) is group:
            del self.active[group.tenant_id]

    def sandboxes(self, tenant_id: str) -> list[SandboxHandle]:
        """The tenant's live sandboxes of its current version, oldest first."""
        group = self.active.get(tenant_id)
        return [h for h in group.sandboxes if h.alive] if group is not None else []

    # --- ending ----------------------------------------------------------------------------------

    def evict_tenant(self, tenant_id: str, reason: str) -> int:
        """End every sandbox of the tenant, busy or idle; how many there were."""
        handles = self.sandboxes(tenant_id)
        for handle in handles:
            self.evict(handle, reason)
        return len(handles)

    def _detach(self, handle: SandboxHandle) -> None:
        group = handle.group
        if group is not None:
            self.lru.pop(handle.id, None)
            if handle in group.sandboxes:
                group.sandboxes.remove(handle)
            if handle in group.idle:
                group.idle.remove(handle)
            if group.queue:
                group.wake_queue()  # under its cap again: a queued call may start one
            self._forget_if_empty(group)

    # --- memory and idleness --------------------------------------------------------------------

    def watch_memory(self, interval: float) -> None:
        """Start the memory watch of busy sandboxes (see runtime.memory_watch)."""
        self._spawn(
            memory_watch.watch(
                interval,
                self.handles.values,
                self.metrics,
                self.evict,
                lambda: self.closed,
            )
        )

    def sweep(self, idle_ttl: float) -> None:
        """Evict idle sandboxes past their TTL and those over their memory ceiling, each
        sandbox on its own (a busy tenant's extra sandboxes go once they sit idle).

        The memory of an idle sandbox is read once, at the first sweep after its last call: a
        sandbox runs nothing between calls, so its memory cannot grow while it sits idle."""
        now = time.monotonic()
        since, self._swept_at = self._swept_at, now
        for handle in list(self.lru.values()):
            if handle.users:
                continue
            if now - handle.last_used > idle_ttl:
                self.evict(handle, "idle")
            elif handle.last_used >= since and memory_watch.over_ceiling(handle):
                self.evict(handle, "memory")

    async def close(self) -> None:
        await super().close()
        self._wake_room()
