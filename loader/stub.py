"""What a host holds after loading a worker: stubs whose calls run in the tenant's sandbox.

Host side, on the caller's event loop. A stub does not fork or talk ZeroMQ: it hands each call to
a `Dispatcher` (the runtime's Supervisor), which finds or boots the sandbox. Errors are the
dispatcher's (`runtime.TenantError`, `runtime.SandboxTimeout`, ...), raised unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
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


def stub_worker(stub: object) -> CompiledWorker | None:
    """The compiled worker an entrypoint stub calls (a function, not an attribute: every
    public attribute of a stub is one of the tenant's RPC methods)."""
    worker = getattr(stub, "_worker", None)
    return worker if isinstance(worker, CompiledWorker) else None
