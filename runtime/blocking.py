"""A blocking facade over the Supervisor, for hosts that are not asyncio programs.

Host side. `BlockingSupervisor` runs a private event loop in one background thread and forwards
each call to it with `run_coroutine_threadsafe`; every method blocks the calling thread until the
result is ready and raises the same typed errors as the async API. It is safe to call from several
threads at once (the loop serialises them). Closing stops the loop and the thread; calls after that
raise `SupervisorClosed`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from dynworkers.loader import FetchResponse, WorkerCode, WorkerStub
from dynworkers.runtime.bindings import KVBinding, ServiceBinding
from dynworkers.runtime.errors import SupervisorClosed
from dynworkers.runtime.supervisor import Supervisor, SupervisorConfig

T = TypeVar("T")


class BlockingSupervisor:
    """`with BlockingSupervisor(config) as sup: sup.loader.get(id, callback).fetch(url)`."""

    def __init__(self, config: SupervisorConfig | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="dynworkers", daemon=True
        )
        self._thread.start()
        self.supervisor = Supervisor(config)
        self.loader = BlockingLoader(self)
        self._closed = False
        try:
            self.run(self.supervisor.start())
        except BaseException:
            self.close()
            raise

    def run(self, coro: Awaitable[T]) -> T:
        if self._closed:
            if inspect.iscoroutine(coro):
                coro.close()  # never scheduled: close it so that it is not reported as leaked
            raise SupervisorClosed("the blocking supervisor is closed")
        if not inspect.iscoroutine(coro):  # an awaitable such as loader.get()'s LazyWorker
            coro = _awaited(coro)
        result: T = asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        return result

    def __enter__(self) -> BlockingSupervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.supervisor.close(), self._loop).result()
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def kv(self, namespace: str) -> KVBinding:
        return self.supervisor.kv(namespace)

    def service(self, cls: type, props: dict[str, Any] | None = None) -> ServiceBinding:
        return self.supervisor.service(cls, props)

    def stats(self) -> dict[str, Any]:
        return self.run(_value(self.supervisor.stats))

    def ready(self, timeout: float = 30.0) -> None:
        """Block until the spares have booted (see `Supervisor.ready`)."""
        self.run(self.supervisor.ready(timeout))

    def evict(self, tenant_id: str, reason: str = "manual") -> bool:
        """End every sandbox of the tenant (see `Supervisor.evict`)."""
        return self.run(_value(lambda: self.supervisor.evict(tenant_id, reason)))

    def sandbox_pids(self, tenant_id: str) -> list[int]:
        """The pids of the tenant's live sandboxes, oldest first (a busy tenant has several)."""
        return self.run(_value(lambda: self.supervisor.sandbox_pids(tenant_id)))


class BlockingLoader:
    def __init__(self, owner: BlockingSupervisor) -> None:
        self._owner = owner

    def get(self, worker_id: str, callback: Callable[[], WorkerCode]) -> BlockingWorker:
        stub = self._owner.run(self._owner.supervisor.loader.get(worker_id, callback))
        return BlockingWorker(self._owner, stub)

    def load(self, code: WorkerCode) -> BlockingWorker:
        return BlockingWorker(
            self._owner, self._owner.run(self._owner.supervisor.loader.load(code))
        )


class BlockingWorker:
    def __init__(self, owner: BlockingSupervisor, stub: WorkerStub) -> None:
        self._owner = owner
        self._stub = stub

    def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
    ) -> FetchResponse:
        return self._owner.run(self._stub.fetch(url, method=method, headers=headers, body=body))

    def get_entrypoint(self, name: str | None = None, props: Any = None) -> BlockingEntrypoint:
        return BlockingEntrypoint(self._owner, self._stub.get_entrypoint(name, props))


class BlockingEntrypoint:
    def __init__(self, owner: BlockingSupervisor, stub: Any) -> None:
        self._owner = owner
        self._stub = stub

    def fetch(self, url: str, **kwargs: Any) -> FetchResponse:
        response: FetchResponse = self._owner.run(self._stub.fetch(url, **kwargs))
        return response

    def __getattr__(self, method: str) -> Callable[..., Any]:
        remote = getattr(self._stub, method)
        return lambda *args, **kwargs: self._owner.run(remote(*args, **kwargs))


async def _value(fn: Callable[[], T]) -> T:
    return fn()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
