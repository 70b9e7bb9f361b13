"""The host's handle on the zygote process.

Runs in the host, on the supervisor's event loop. Starts the zygote as a fresh interpreter, sends
it the policy, then fork and kill requests; reads `Forked` and `Exited` frames from its stdout with
a loop reader (no thread). The zygote owns the sandbox process table; the host learns of every
exit from it, with the decoded wait status, and never signals a pid itself (a reaped pid may be
reused).

The zygote starts with a minimal environment, never the host's variables (which may hold
secrets): `PATH`, a UTF-8 locale, and a `PYTHONPATH` built from the host's own `sys.path`, so
that it imports the same dynworkers and the same packages as the host. It runs in `/` with
`-P` (no working directory on its `sys.path`) and `-s` (no user site beyond what the host uses).

If the zygote dies, every pending fork fails with `BootError`, `on_lost` is called (its sandboxes
die with it through their parent-death signal), and the next `fork` starts a new zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from dynworkers.runtime import protocol
from dynworkers.runtime.errors import BootError
from dynworkers.sandbox_policy import Policy

log = logging.getLogger("dynworkers.zygote")

_ROOT = str(Path(__file__).resolve().parent.parent)
START_TIMEOUT = 30.0


def zygote_environment() -> dict[str, str]:
    """The zygote's whole environment: nothing of the host's but its import path."""
    paths = [_ROOT]
    for entry in sys.path:
        if entry and os.path.isabs(entry) and entry not in paths and os.path.exists(entry):
            paths.append(entry)
    return {
        "PATH": os.defpath,
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(paths),
    }


class ZygoteClient:
    def __init__(
        self,
        policy: Policy,
        on_exit: Callable[[protocol.Exited], None],
        on_lost: Callable[[], None],
        warmup: list[protocol.ModuleCode] | None = None,
    ) -> None:
        self.policy = policy
        self.warmup = warmup or []
        self.on_exit = on_exit
        self.on_lost = on_lost
        self.process: subprocess.Popen[bytes] | None = None
        self.ready: protocol.ZygoteReady | None = None
        self._ready_future: asyncio.Future[protocol.ZygoteReady] | None = None
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._inbox = bytearray()
        self._starting: asyncio.Lock | None = None
        self.closed = False  # after close, nothing may start a zygote again

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.ready is not None

    @property
    def _running(self) -> bool:
        """Started and not known to be lost, without a waitpid: for the per-sandbox calls. A
        zygote that died meanwhile is found by the reader (EOF) or by the write (EPIPE)."""
        return self.process is not None and self.ready is not None

    async def start(self) -> protocol.ZygoteReady:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.closed:
                raise BootError(None, "the supervisor is closed: no new sandboxes")
            if self.alive:
                assert self.ready is not None
                return self.ready
            return await self._spawn()

    async def _spawn(self) -> protocol.ZygoteReady:
        loop = asyncio.get_running_loop()
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-s", "-m", "dynworkers.runtime.sandbox.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=zygote_environment(),
            cwd="/",
            close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C goes to the host, which decides
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self._inbox.clear()
        self._ready_future = loop.create_future()
        loop.add_reader(self.process.stdout.fileno(), self._on_readable)
        body = msgspec.json.encode(protocol.ZygoteInit(policy=self.policy, warmup=self.warmup))
        self._write(len(body).to_bytes(4, "big") + body)
        try:
            self.ready = await asyncio.wait_for(self._ready_future, START_TIMEOUT)
        except (TimeoutError, BootError) as exc:
            self._stop_process()
            raise BootError(None, f"the zygote did not start: {exc}") from None
        for layer, reason in self.ready.unavailable:
            log.warning("hardening layer %s unavailable: %s", layer, reason)
        return self.ready

    def _write(self, data: bytes) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def _on_readable(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self._lost("the zygote exited")
            return
        self._inbox += chunk
        for body in protocol.split_frames(self._inbox):
            message = protocol.from_zygote.decode(body)
            if isinstance(message, protocol.Forked):
                future = self._forks.pop(message.sandbox_id, None)
                if future is not None and not future.done():
                    future.set_result(message.pid)
            elif isinstance(message, protocol.Exited):
                self.on_exit(message)
            elif (
                isinstance(message, protocol.ZygoteReady)
                and self._ready_future is not None
                and not self._ready_future.done()
            ):
                self._ready_future.set_result(message)

    def _lost(self, why: str) -> None:
        loop = asyncio.get_running_loop()
        if self.process is not None and self.process.stdout is not None:
            loop.remove_reader(self.process.stdout.fileno())
        self._stop_process()
        self.ready = None
        error = BootError(None, f"{why}; its sandboxes die with it, the next boot restarts it")
        if self._ready_future is not None and not self._ready_future.done():
            self._ready_future.set_exception(error)
        for future in self._forks.values():
            if not future.done():
                future.set_exception(error)
        self._forks.clear()
        self.on_lost()

    async def fork(self, request: protocol.ForkRequest) -> int:
        """Ask for one sandbox; return its pid once the zygote has forked it."""
        if not self._running:
            await self.start()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._forks[request.sandbox_id] = future
        try:
            self._write(protocol.frame(request))
        except (BrokenPipeError, OSError) as exc:
            self._forks.pop(request.sandbox_id, None)
            raise BootError(None, f"the zygote is gone: {exc}") from None
        return await future

    def kill(self, sandbox_id: int) -> None:
        if self._running:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._write(protocol.frame(protocol.Kill(sandbox_id=sandbox_id)))

    async def close(self) -> None:
        """Close the zygote's stdin: it kills and reaps every sandbox, then exits."""
        self.closed = True
        if self.process is None:
            return
        process, self.process = self.process, None
        assert process.stdout is not None and process.stdin is not None
        asyncio.get_running_loop().remove_reader(process.stdout.fileno())
        with contextlib.suppress(OSError):
            process.stdin.close()
        deadline = asyncio.get_running_loop().time() + 10
        while process.poll() is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        self.ready = None

    def _stop_process(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.process = None
