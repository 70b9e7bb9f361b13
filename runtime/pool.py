"""The pool: spares booted ahead of need, and an LRU of specialised sandboxes by tenant id.

Host side, on the supervisor's event loop. It owns every `SandboxHandle`: boots spares through the
zygote, specialises a spare for a tenant on a cold start, keeps at most `max_sandboxes`
specialised, and evicts with a recorded reason (capacity, idle, memory, deadline, crash,
protocol, shutdown, manual). A memory watch kills a sandbox over its ceiling during a call
(`watch_memory` says which mechanism holds the ceiling where). The process table changes only
on evidence: a handle is dead when the zygote reports its exit, or when the pool kills it.

Cold starts for one tenant are single-flight. Capacity eviction takes the least recently used
sandbox that nobody holds; if every sandbox is held, the caller waits, and gets `PoolBusy` at its
deadline. A boot failure raises `BootError` to the caller that needed the sandbox and nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Coroutine
from typing import Any

import psutil
import zmq

from dynworkers.loader import CompiledWorker
from dynworkers.runtime import protocol
from dynworkers.runtime.bindings import BindingRateLimit
from dynworkers.runtime.channel import Channel
from dynworkers.runtime.errors import (
    BootError,
    MemoryLimitExceeded,
    PoolBusy,
    ProtocolError,
    SandboxCrashed,
    SandboxError,
    SupervisorClosed,
)
from dynworkers.runtime.handle import SandboxHandle
from dynworkers.runtime.metrics import PoolMetrics
from dynworkers.runtime.zygote_client import ZygoteClient

log = logging.getLogger("dynworkers.pool")


class Pool:
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
    ) -> None:
        self.zygote = zygote
        self.context = context
        self.run_dir = run_dir
        self.max_sandboxes = max_sandboxes
        self.target_spares = spares
        self.boot_timeout = boot_timeout
        self.max_frame = max_frame
        self.metrics = metrics
        self.rate_limit = rate_limit
        self.spares: deque[SandboxHandle] = deque()
        self.active: OrderedDict[str, SandboxHandle] = OrderedDict()
        self.handles: dict[int, SandboxHandle] = {}
        self.booting = 0
        self.spare_boots = 0  # boots started by replenish and not finished
        self.reserved = 0  # cold starts that hold a slot but are not yet in `active`
        self.waiters = 0  # cold starts waiting for a sandbox to be released
        self.boot_slots = asyncio.Semaphore(max_concurrent_boots)
        self.released = asyncio.Condition()
        self._cold: dict[str, asyncio.Future[SandboxHandle]] = {}
        self._ever_served: OrderedDict[str, None] = OrderedDict()
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.layers: list[str] = []
        self.unavailable: list[tuple[str, str]] = []

    # --- booting ---------------------------------------------------------------------------------

    async def boot(self) -> SandboxHandle:
        """Fork, connect and confine one blank sandbox."""
        if self.closed:
            raise SupervisorClosed("the supervisor is closed")
        self._next_id += 1
        sandbox_id = self._next_id
        handle: SandboxHandle | None = None
        started = time.perf_counter()
        self.booting += 1
        try:
            async with self.boot_slots:
                channel = Channel(
                    self.context,
                    self.run_dir,
                    sandbox_id,
                    self.max_frame,
                    on_message=lambda m: handle.on_message(m) if handle else None,
                    on_broken=lambda why: self._broken(sandbox_id, why),
                )
                handle = SandboxHandle(sandbox_id, channel, self.rate_limit)
                self.handles[sandbox_id] = handle
                request = protocol.ForkRequest(
                    sandbox_id=sandbox_id, endpoint=channel.endpoint, token=channel.token
                )
                handle.pid = await asyncio.wait_for(self.zygote.fork(request), self.boot_timeout)
                await asyncio.wait_for(channel.hello, self.boot_timeout)
                channel.send(protocol.Welcome())
                ready = await asyncio.wait_for(channel.ready, self.boot_timeout)
        except (TimeoutError, SandboxError, OSError, zmq.ZMQError) as exc:
            self.metrics.boot_failures += 1
            if handle is not None:
                self._end(handle, "crash", kill=True)
            if isinstance(exc, BootError):
                raise
            raise BootError(None, f"a sandbox did not boot: {exc!r}") from None
        finally:
            self.booting -= 1
        handle.layers, handle.unavailable = ready.active_layers, list(ready.unavailable)
        self.layers, self.unavailable = handle.layers, handle.unavailable
        handle.state = "spare"
        self.metrics.boots += 1
        self.metrics.spare_boot.append(time.perf_counter() - started)
        return handle

    def replenish(self) -> None:
        """Start boots until spares plus boots in flight reach the target."""
        while not self.closed and len(self.spares) + self.spare_boots < self.target_spares:
            self.spare_boots += 1
            self._spawn(self._boot_spare())

    async def _boot_spare(self) -> None:
        try:
            handle = await self.boot()
        except (BootError, SupervisorClosed) as exc:
            if self.closed:
                return
            log.warning("spare boot failed: %s", exc)
            await asyncio.sleep(0.5)  # do not spin on a broken zygote
            return
        finally:
            self.spare_boots -= 1
        if self.closed or not handle.alive:
            self._end(handle, "shutdown", kill=True)
            return
        self.spares.append(handle)

    async def take_spare(self) -> SandboxHandle:
        while self.spares:
            handle = self.spares.popleft()
            if handle.alive:
                # Replace it once the cold start is under way, not during it: a fork and a bind
                # on the critical path would add to boot latency on a two-core machine.
                asyncio.get_running_loop().call_later(0.002, self.replenish)
                return handle
        handle = await self.boot()
        self.replenish()
        return handle

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- acquiring -------------------------------------------------------------------------------

    async def acquire(self, worker: CompiledWorker, deadline: float) -> tuple[SandboxHandle, bool]:
        """The tenant's sandbox, held by the caller (release it); and whether it was cold."""
        if self.closed:
            raise SupervisorClosed("the supervisor is closed")
        tenant = worker.worker_id
        handle = self.active.get(tenant)
        if (
            handle is not None
            and handle.worker is not None
            and handle.worker.version != worker.version
        ):
            self._retire(handle)  # a redeploy: new calls go to a fresh sandbox with the new code
            handle = None
        if handle is not None and handle.alive:
            self.active.move_to_end(tenant)
            handle.users += 1
            self.metrics.warm += 1
            return handle, False
        pending = self._cold.get(tenant)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._cold[tenant] = pending
            self._spawn(self._cold_start(worker, deadline, pending))
        handle = await asyncio.shield(pending)
        handle.users += 1
        return handle, True

    async def _cold_start(
        self, worker: CompiledWorker, deadline: float, result: asyncio.Future[SandboxHandle]
    ) -> None:
        """Specialise a spare for the tenant. The caller's Invoke is pipelined behind the
        Specialise message; a tenant whose modules fail reports it on that Invoke."""
        tenant = worker.worker_id
        started = time.perf_counter()
        try:
            await self._make_room(deadline)
        except BaseException as exc:
            self._cold.pop(tenant, None)
            result.set_exception(exc)
            result.exception()
            return
        try:
            handle = await self.take_spare()
            handle.tenant_id = tenant
            handle.worker = worker
            handle.state = "specialised"
            specialised = asyncio.get_running_loop().create_future()
            handle.channel.specialised = specialised
            handle.channel.send(handle.specialise_message(worker))
            self.active[tenant] = handle
        except BaseException as exc:
            if not result.done():
                result.set_exception(exc)
                result.exception()
        else:
            specialised.add_done_callback(lambda future: self._specialised(handle, future, started))
            result.set_result(handle)
        finally:
            self.reserved -= 1
            self._cold.pop(tenant, None)
            if self.waiters:  # a failed start frees its slot for a waiter
                async with self.released:
                    self.released.notify_all()

    def _specialised(
        self, handle: SandboxHandle, future: asyncio.Future[protocol.Specialised], started: float
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
        if tenant in self._ever_served:
            self.metrics.rehydrations += 1
        self._ever_served[tenant] = None
        if len(self._ever_served) > 100_000:
            self._ever_served.popitem(last=False)

    async def _make_room(self, deadline: float) -> None:
        """Reserve a slot for one cold start, evicting the least recently used idle sandbox
        when the pool is full; wait for a release when every sandbox is held."""
        loop = asyncio.get_running_loop()
        async with self.released:
            while len(self.active) + self.reserved >= self.max_sandboxes:
                victim = next((h for h in self.active.values() if h.users == 0), None)
                if victim is not None:
                    self.evict(victim, "capacity")
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise PoolBusy(
                        f"all {self.max_sandboxes} sandboxes are busy; retry later or raise "
                        "max_sandboxes"
                    )
                self.waiters += 1
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.released.wait(), remaining)
                finally:
                    self.waiters -= 1
            self.reserved += 1

    def _retire(self, handle: SandboxHandle) -> None:
        assert handle.tenant_id is not None
        del self.active[handle.tenant_id]
        handle.retired = True
        if handle.users == 0:
            self.evict(handle, "redeploy")

    async def release(self, handle: SandboxHandle) -> None:
        handle.users -= 1
        handle.last_used = time.monotonic()
        if handle.users == 0 and handle.retired:
            self.evict(handle, "redeploy")
        if handle.users == 0 and self.waiters:
            async with self.released:
                self.released.notify_all()

    # --- ending ----------------------------------------------------------------------------------

    def evict(
        self,
        handle: SandboxHandle,
        reason: str,
        error: BaseException | None = None,
        kill: bool = True,
    ) -> None:
        """End a sandbox for `reason`, counted once; every call pending on it fails with
        `error`. `kill=False` when the process is already gone (the zygote reported it)."""
        if not handle.alive:
            return
        self.metrics.evictions[reason] += 1
        if self.metrics.observers and handle.tenant_id is not None:
            self.metrics.tell(f"evict:{reason}", handle.tenant_id, 1.0)
        log.debug("evict %r: %s", handle, reason)
        self._end(handle, reason, kill=kill, error=error)

    def _end(
        self, handle: SandboxHandle, reason: str, kill: bool, error: BaseException | None = None
    ) -> None:
        handle.state = "dead"
        handle.exit_reason = handle.exit_reason or reason
        if handle.tenant_id is not None and self.active.get(handle.tenant_id) is handle:
            del self.active[handle.tenant_id]
        if kill:
            self.zygote.kill(handle.id)
        handle.cancel_bindings()
        if error is None:
            error = SandboxCrashed(
                handle.tenant_id, f"sandbox {handle.id} was evicted: {reason}", reason
            )
        elif isinstance(error, SandboxError) and error.reason is None:
            error.reason = reason
        handle.channel.fail_all(error)
        handle.channel.close()

    def on_exit(self, exited: protocol.Exited) -> None:
        """The zygote reaped a sandbox: the only evidence that removes it from the table."""
        handle = self.handles.pop(exited.sandbox_id, None)
        if handle is None or not handle.alive:
            return
        handle.exit_reason = exited.description
        message = f"sandbox of tenant {handle.tenant_id!r} {exited.description}"
        self.evict(handle, "crash", SandboxCrashed(handle.tenant_id, message), kill=False)

    def on_zygote_lost(self) -> None:
        for handle in list(self.handles.values()):
            error = SandboxCrashed(handle.tenant_id, "the zygote died, taking its sandboxes")
            self.evict(handle, "crash", error, kill=False)
        self.handles.clear()
        self.spares.clear()

    def _broken(self, sandbox_id: int, why: str) -> None:
        handle = self.handles.get(sandbox_id)
        if handle is not None:
            self.evict(
                handle,
                "protocol",
                ProtocolError(handle.tenant_id, f"sandbox of tenant {handle.tenant_id!r} {why}"),
            )

    # --- memory ceiling --------------------------------------------------------------------------

    def watch_memory(self, interval: float) -> None:
        """Start the memory watch: every `interval` seconds, kill a busy sandbox over its ceiling.

        The ceiling (`SupervisorConfig.memory_limit_mb`, or the worker's `Limits.memory_mb`) is
        held while a call runs by this watch of the resident set of every sandbox that has a call
        in flight; its pending calls fail at once with `MemoryLimitExceeded` naming the ceiling.
        Between checks a fast allocation can overshoot; the sandbox's RLIMIT_AS
        (`OsLimits.memory_bytes`) is the backstop that no allocation passes (a `MemoryError` in
        tenant code). The idle sweep (`sweep`) checks sandboxes without a call.

        cgroup v2 `memory.max` is not used: it needs a delegated cgroup with the memory
        controller whose processes all live in leaves, which the host's own cgroup is not on the
        machines this runs on (CI has a v1 memory hierarchy); the RSS watch works everywhere.
        """
        self._spawn(self._watch_memory(interval))

    async def _watch_memory(self, interval: float) -> None:
        while not self.closed:
            await asyncio.sleep(interval)
            try:
                self.check_busy_memory()
            except Exception:  # the watch outlives any one bad reading (EMFILE, a psutil bug)
                log.exception("memory watch: a check failed; trying again in %g s", interval)

    def check_busy_memory(self) -> None:
        """Kill every sandbox with a call in flight whose RSS is over its ceiling."""
        for handle in list(self.handles.values()):
            if not handle.alive or not handle.users or not handle.memory_limit:
                continue
            used = self.rss(handle)
            if used > handle.memory_limit:
                self.metrics.memory_kills += 1
                limit_mib = handle.memory_limit / (1 << 20)
                error = MemoryLimitExceeded(
                    handle.tenant_id,
                    f"tenant {handle.tenant_id!r} used {used / (1 << 20):.0f} MiB during a call, "
                    f"over its memory ceiling of {limit_mib:g} MiB: its sandbox was killed and the "
                    "next call starts a fresh one; use less memory, or raise memory_limit_mb",
                    limit_bytes=handle.memory_limit,
                    used_bytes=used,
                )
                self.evict(handle, "memory", error)

    # --- sweeping --------------------------------------------------------------------------------

    def sweep(self, idle_ttl: float) -> None:
        """Evict idle sandboxes and those over their memory ceiling."""
        now = time.monotonic()
        for handle in list(self.active.values()):
            if handle.users:
                continue
            if now - handle.last_used > idle_ttl:
                self.evict(handle, "idle")
                continue
            if handle.memory_limit and self.rss(handle) > handle.memory_limit:
                self.evict(handle, "memory")

    @staticmethod
    def rss(handle: SandboxHandle) -> int:
        """Resident bytes of the sandbox; 0 when it cannot be read (gone, or out of fds)."""
        try:
            return int(psutil.Process(handle.pid).memory_info().rss)
        except (psutil.Error, OSError):
            return 0

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for handle in list(self.handles.values()):
            if handle.alive:
                self.metrics.evictions["shutdown"] += 1
                self._end(
                    handle,
                    "shutdown",
                    kill=True,
                    error=SupervisorClosed("the supervisor shut down during the call"),
                )
        self.spares.clear()
