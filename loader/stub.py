"""What a host holds after loading a worker: stubs whose calls run in the tenant's sandbox.

Host side, on the caller's event loop. A stub does not fork or talk ZeroMQ: it hands each call to
a `Dispatcher` (the runtime's Supervisor), which finds or boots the sandbox. Errors are the
dispatcher's (`runtime.TenantError`, `runtime.SandboxTimeout`, ...), raised unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, Protocol

from dynworkers.loader.compile import CompiledWorker


class Dispatcher(Protocol):
    async def invoke(
        self,
        worker: CompiledWorker,
        entrypoint: str | None,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        props: Any,
    ) -> Any: ...


class FetchResponse:
    """A tenant's HTTP response, as plain data on the host."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<FetchResponse {self.status} {len(self.body)} bytes>"


def _request_args(
    url: str, method: str, headers: Mapping[str, str] | None, body: str | bytes | None
) -> list[Any]:
    if isinstance(body, str):
        body = body.encode()
    pairs = [(str(k), str(v)) for k, v in (headers or {}).items()]
    return [[method.upper(), url, pairs, body or b""]]


class EntrypointStub:
    def __init__(
        self, worker: CompiledWorker, dispatcher: Dispatcher, name: str | None, props: Any
    ) -> None:
        self._worker = worker
        self._dispatcher = dispatcher
        self._name = name
        self._props = props

    async def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
    ) -> FetchResponse:
        status, header_pairs, payload = await self._dispatcher.invoke(
            self._worker,
            self._name,
            "fetch",
            _request_args(url, method, headers, body),
            {},
            self._props,
        )
        return FetchResponse(status, dict(header_pairs), payload)

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._dispatcher.invoke(
                self._worker, self._name, method, list(args), kwargs, self._props
            )

        return call


class WorkerStub:
    """`loader.get(...)` and `loader.load(...)` return one of these."""

    def __init__(self, worker: CompiledWorker, dispatcher: Dispatcher) -> None:
        self.worker = worker
        self._default = EntrypointStub(worker, dispatcher, None, None)
        self._dispatcher = dispatcher

    @property
    def id(self) -> str:
        return self.worker.worker_id

    @property
    def version(self) -> str:
        return self.worker.version

    def get_entrypoint(self, name: str | None = None, props: Any = None) -> EntrypointStub:
        if name is None and props is None:
            return self._default
        return EntrypointStub(self.worker, self._dispatcher, name, props)

    async def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
    ) -> FetchResponse:
        return await self._default.fetch(url, method=method, headers=headers, body=body)


class LazyWorker:
    """What `loader.get(id, callback)` returns at once, as Cloudflare's `LOADER.get` does: the
    worker's code loads on its first call (callback, compile, then the call). `await` it for the
    loaded `WorkerStub` (the earlier style, which keeps working). A callback or compile error
    is raised by the call that needed the code; nothing is cached then, so the next call retries.
    """

    def __init__(self, load: Callable[[], Awaitable[WorkerStub]]) -> None:
        self._load = load

    def __await__(self) -> Generator[Any, None, WorkerStub]:
        return self._load().__await__()

    def get_entrypoint(self, name: str | None = None, props: Any = None) -> LazyEntrypoint:
        return LazyEntrypoint(self._load, name, props)

    async def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
    ) -> FetchResponse:
        stub = await self._load()
        return await stub.fetch(url, method=method, headers=headers, body=body)


class LazyEntrypoint:
    """An entrypoint of a `LazyWorker`: its calls load the code first. Awaiting it gives the
    loaded `EntrypointStub` (what a workflow's `load_runner` may return)."""

    def __init__(
        self, load: Callable[[], Awaitable[WorkerStub]], name: str | None, props: Any
    ) -> None:
        self._load = load
        self._name = name
        self._props = props

    def __await__(self) -> Generator[Any, None, EntrypointStub]:
        return self._resolve().__await__()

    async def _resolve(self) -> EntrypointStub:
        return (await self._load()).get_entrypoint(self._name, self._props)

    async def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
    ) -> FetchResponse:
        entry = await self._resolve()
        return await entry.fetch(url, method=method, headers=headers, body=body)

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            entry = await self._resolve()
            return await getattr(entry, method)(*args, **kwargs)

        return call


def stub_worker(stub: object) -> CompiledWorker | None:
    """The compiled worker an entrypoint stub calls (a function, not an attribute: every
    public attribute of a stub is one of the tenant's RPC methods)."""
    worker = getattr(stub, "_worker", None)
    return worker if isinstance(worker, CompiledWorker) else None
