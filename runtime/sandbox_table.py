"""The process table: every sandbox handle by id, the spares booted ahead of need, and ending.

Host side, on the supervisor's event loop; the base of `Pool`, which adds the tenants. It boots
blank sandboxes through the zygote (fork, connect, confine), keeps `spares` of them ready, and
ends any sandbox with a recorded reason, failing every call pending on it at once. The table
changes only on evidence: a handle leaves it when the zygote reports its exit.

Failures: a boot that fails raises `BootError` to whoever needed the sandbox; a spare boot that
fails is logged and retried by the next `replenish` (after a pause, so a broken zygote is not
spun on). A frame that does not decode ends that sandbox ("protocol"), never the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import zmq

from dynworkers.runtime import protocol
from dynworkers.runtime.bindings import BindingRateLimit
from dynworkers.runtime.channel import Channel
from dynworkers.runtime.errors import (
    BootError,
    ProtocolError,
    SandboxCrashed,
    SandboxError,
    SupervisorClosed,
)
from dynworkers.runtime.handle import SandboxHandle
from dynworkers.runtime.metrics import PoolMetrics
from dynworkers.runtime.zygote_client import ZygoteClient

log = logging.getLogger("dynworkers.pool")


class SandboxTable:
    def __init__(
        self,
        *,
        zygote: ZygoteClient,
        context: zmq.Context[zmq.Socket[bytes]],
        run_dir: str,
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
        self.target_spares = spares
        self.boot_timeout = boot_timeout
        self.max_frame = max_frame
        self.metrics = metrics
        self.rate_limit = rate_limit
        self.spares: deque[SandboxHandle] = deque()
        self.handles: dict[int, SandboxHandle] = {}
        self.booting = 0
        self.spare_boots = 0  # boots started by replenish and not finished
        self.boot_slots = asyncio.Semaphore(max_concurrent_boots)
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
                # One deadline for the whole boot (fork, Hello, Ready), and no task per step.
                async with asyncio.timeout(self.boot_timeout):
                    handle.pid = await self.zygote.fork(request)
                    await channel.hello
                    channel.send(protocol.Welcome())
                    ready = await channel.ready
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

    def _detach(self, handle: SandboxHandle) -> None:
        """The pool's part of ending a sandbox: forget it wherever it was listed."""

    def _end(
        self, handle: SandboxHandle, reason: str, kill: bool, error: BaseException | None = None
    ) -> None:
        handle.state = "dead"
        handle.exit_reason = handle.exit_reason or reason
        self._detach(handle)
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
