"""Host-side bindings: what a sandbox's RPC stubs reach, and the capability check.

Host side, on the supervisor's event loop. A binding is created by the host
(`supervisor.kv(namespace)`, `supervisor.service(HostClass, props=...)`, a `global_outbound`
callable) and put in a `WorkerCode.env`. When a sandbox is specialised, each binding gets a
capability id in that sandbox's table; a `BindingCall` is served only if its id is in the table
of the channel it arrived on and its method is one the binding offers. The tenant id passed to a
binding is the channel's, never the frame's.

Failures become error replies: "capability" for a call outside the table, "binding" for an
exception in the host code, "rate_limit" for a call over the tenant's rate (`BindingRateLimit`, a
token bucket per tenant id, shared by all of that tenant's sandboxes, so that a new sandbox does
not reset it). What a "binding" error tells the tenant (`binding_failure`; the host's stack never
crosses):

- an exception that is (or derives from) a builtin in `protocol.HOST_ERROR_TYPES` (ValueError,
  TypeError, KeyError, IndexError, LookupError, PermissionError, TimeoutError, ConnectionError,
  NotImplementedError, ArithmeticError, ZeroDivisionError) reaches the tenant as that builtin type
  (also a `workers.BindingError`) with its message: raise these in a service for errors the
  tenant should handle;
- an error of dynworkers itself (KV unavailable, a workflow store failure, ...) reaches it as a
  `BindingError` with its message, written for the tenant;
- anything else is the host's bug: the tenant gets an opaque `BindingError` carrying an error id,
  and the host logs the traceback under that id (logger `dynworkers.bindings`), so that neither
  the host's internals nor its data reach the tenant.

`supervisor.service(cls, props=...)`: for every call the host builds `cls(ctx)` with a
`ServiceContext` (`ctx.tenant_id`, the calling tenant, from its channel; `ctx.props`, a copy of
the props the host bound) and calls the method; its public methods (no leading "_") are what the
tenant may call, with plain-data arguments and results; a method may be `async def`.

With tracing on (runtime.tracing), the outbound request carries the W3C `traceparent` of the
binding call's span, so the host's fetch continues the trace of the request that caused it.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynworkers.loader import Binding
from dynworkers.runtime import protocol, tracing

log = logging.getLogger("dynworkers.bindings")


def binding_failure(exc: BaseException, tenant_id: str | None, method: str) -> protocol.ErrorInfo:
    """What the tenant is told of an exception raised by host binding code (module doc)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in protocol.HOST_ERROR_TYPES and getattr(builtins, cls.__name__) is cls:
            # KeyError's str() is the repr of its key: send the key, the tenant's str() matches
            plain = isinstance(exc, KeyError) and len(exc.args) == 1
            message = str(exc.args[0]) if plain else str(exc)
            return protocol.ErrorInfo(kind="binding", type_name=cls.__name__, message=message)
    if type(exc).__module__.startswith("dynworkers."):
        return protocol.ErrorInfo(kind="binding", type_name=type(exc).__name__, message=str(exc))
    error_id = secrets.token_hex(6)
    log.error(
        "binding call %r of tenant %r failed in host code (error id %s)",
        method,
        tenant_id,
        error_id,
        exc_info=exc,
    )
    return protocol.ErrorInfo(
        kind="binding",
        type_name="HostError",
        message=f"the host failed on binding call {method!r} (error id {error_id}; the host's "
        "log has the details under that id)",
    )


class KVBinding(Binding):
    kind = "kv"
    methods = frozenset({"get", "put", "delete", "list"})

    def __init__(self, store: Any, namespace: str) -> None:
        """`store` is a KV backend (runtime.kv.KVStore, runtime.kv_postgres.PostgresKV)."""
        if not isinstance(namespace, str) or not namespace:
            raise ValueError("a KV namespace must be a non-empty str")
        self.store = store
        self.namespace = namespace

    async def call(
        self, tenant_id: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        result = getattr(self.store, method)(tenant_id, self.namespace, *args, **kwargs)
        if inspect.isawaitable(result):  # the PostgreSQL KV
            result = await result
        return result

    def __repr__(self) -> str:
        return f"<KVBinding {self.namespace!r}>"


@dataclass(frozen=True)
class ServiceContext:
    """What a host-side service class receives: the props the host bound, and who is calling."""

    tenant_id: str
    props: dict[str, Any] = field(default_factory=dict)


def public_methods(cls: type) -> frozenset[str]:
    return frozenset(
        name
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and callable(value)
    )


class ServiceBinding(Binding):
    """Exposes the public methods of a host class; an instance per call, built with its props.

    This is the `ctx.exports.X({props})` pattern: the host decides the props (say, which account a
    tenant may touch) and the tenant can call methods but never change them.
    """

    kind = "service"

    def __init__(self, cls: type, props: dict[str, Any] | None = None) -> None:
        if not isinstance(cls, type):
            raise TypeError("supervisor.service() takes a class")
        self.cls = cls
        self.props = dict(props or {})
        self.methods = public_methods(cls)

    async def call(
        self, tenant_id: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        instance = self.cls(ServiceContext(tenant_id=tenant_id, props=dict(self.props)))
        result = getattr(instance, method)(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def __repr__(self) -> str:
        return f"<ServiceBinding {self.cls.__name__} {sorted(self.methods)}>"


@dataclass(frozen=True)
class OutboundRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    tenant_id: str


@dataclass(frozen=True)
class OutboundResponse:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class OutboundBinding(Binding):
    """A tenant's global `fetch()`, handed to the host's `global_outbound` callable."""

    kind = "outbound"
    methods = frozenset({"fetch"})

    def __init__(self, handler: Callable[[OutboundRequest], Any]) -> None:
        self.handler = handler

    async def call(
        self, tenant_id: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        method_, url, headers, body = args[0]
        headers = dict(headers)
        if tracing.ENABLED:  # the current span (this binding call's) travels with the request
            tracing.inject(headers)
        request = OutboundRequest(
            method=str(method_),
            url=str(url),
            headers=headers,
            body=bytes(body),
            tenant_id=tenant_id,
        )
        response = self.handler(request)
        if inspect.isawaitable(response):
            response = await response
        if not isinstance(response, OutboundResponse):
            raise TypeError("global_outbound must return a runtime.OutboundResponse")
        body_out = response.body.encode() if isinstance(response.body, str) else response.body
        return [response.status, list(response.headers.items()), body_out]


class CapabilityTable:
    """One sandbox's grants: capability id -> binding. Ids start at 1; 0 means none."""

    def __init__(self) -> None:
        self.entries: dict[int, Binding] = {}
        self._next = 1

    def grant(self, binding: Binding) -> int:
        capability = self._next  # never reused: a revoked id stays dead
        self._next += 1
        self.entries[capability] = binding
        return capability

    def revoke(self, capability: int) -> None:
        self.entries.pop(capability, None)

    def check(self, capability: int, method: str) -> Binding | None:
        binding = self.entries.get(capability)
        if binding is None or method not in binding.methods:
            return None
        return binding


class BindingRateLimit:
    """A token bucket per tenant: `rate` binding calls a second, bursts of up to `burst`.

    `rate=0` turns the limit off. Buckets are kept for the `max_tenants` most recently seen
    tenants; a tenant that was forgotten starts again with a full bucket, which is what an idle
    tenant would have anyway. `refused` counts refused calls, per tenant and in total.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_tenants: int = 100_000,
    ) -> None:
        self.rate = float(rate)
        self.burst = float(max(burst, 1))
        self.clock = clock
        self.max_tenants = max_tenants
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self.refused_total = 0
        self.refused: dict[str, int] = {}

    def allow(self, tenant_id: str) -> bool:
        """Take one token for `tenant_id`; False (and counted) when its bucket is empty."""
        if self.rate <= 0:
            return True
        now = self.clock()
        tokens, at = self._buckets.pop(tenant_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        else:
            self.refused_total += 1
            self.refused[tenant_id] = self.refused.get(tenant_id, 0) + 1
        self._buckets[tenant_id] = (tokens, now)
        if len(self._buckets) > self.max_tenants:
            forgotten, _ = self._buckets.popitem(last=False)
            self.refused.pop(forgotten, None)
        return allowed
