"""The sandbox's end of its channel: binding stubs, outbound fetch, console records.

Runs inside a sandbox, in its only thread. Tenant code calls a stub; the stub sends a
`BindingCall` over the sandbox's PAIR socket. Synchronous tenant code blocks until the matching
`BindingReply`; inside an `async def` handler the stub returns a `Pending` at once and the
sandbox's loop (`sandbox_policy.aio`) waits for replies through `has_pending`/`wait`, so calls
gathered in one handler are in flight together. The host
checks the call against this sandbox's capability table; identity is the socket, never a field.

Failures become exceptions raised into tenant code (`CapabilityError`, `BindingError`,
`FetchError`, `RateLimited`); a host error whose type is one of `protocol.HOST_ERROR_TYPES`
(ValueError, KeyError, ...) is raised as that builtin type, a class that is also a `BindingError`,
so that `except ValueError` and `except BindingError` both catch it; arguments that are not plain
data raise `TypeError` before anything is sent, and arguments over the channel's frame limit
`PayloadTooLarge` (the host's socket would drop such a frame, leaving the call to wait out its
deadline). Every frame is checked against the limit in `send`, which raises `FrameTooLarge` for the
loop to turn into an error reply. Console output beyond the policy's per-invocation budget is
dropped with one notice.
"""

from __future__ import annotations

import builtins
import time
from typing import Any

import msgspec
import zmq

from dynworkers.runtime import protocol
from dynworkers.runtime.sandbox import workers
from dynworkers.sandbox_policy import aio
from dynworkers.sandbox_policy.namespace import register_safe_type


def _host_error_types() -> dict[str, type[workers.BindingError]]:
    """For each name in HOST_ERROR_TYPES, a class deriving from BindingError and that builtin,
    named as the builtin, so that the tenant's traceback reads `ValueError: ...`."""
    made: dict[str, type[workers.BindingError]] = {}
    for name in sorted(protocol.HOST_ERROR_TYPES):
        cls = type(name, (workers.BindingError, getattr(builtins, name)), {})
        cls.__module__ = "workers"
        made[name] = register_safe_type(cls)
    return made


HOST_ERRORS = _host_error_types()


class FrameTooLarge(Exception):
    """A frame over the channel's limit; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{size} bytes, over the channel's frame limit of {limit} bytes")


class Bridge:
    def __init__(self, socket: zmq.Socket[bytes], max_log_bytes: int, frame_limit: int) -> None:
        self.socket = socket
        self.max_log_bytes = max_log_bytes
        self.log_budget = max_log_bytes
        self.frame_limit = frame_limit
        self.next_id = 0
        #: request id -> the Pending of a call made from async tenant code, until its reply.
        self.pending: dict[int, aio.Pending] = {}

    def send(self, message: protocol.Message) -> None:
        data = protocol.encode(message)
        if len(data) > self.frame_limit:
            raise FrameTooLarge(len(data), self.frame_limit)
        # copy=True always: a zero-copy send of a large frame makes pyzmq import a module and
        # start a garbage-collector thread, neither of which a confined sandbox may do.
        self.socket.send(data, copy=True)

    def _send_call(self, call: protocol.BindingCall) -> None:
        try:
            self.send(call)
        except FrameTooLarge as exc:
            raise workers.PayloadTooLarge(
                f"binding call {call.method!r} is {exc.size} bytes, over the channel's frame "
                f"limit of {exc.limit} bytes (Policy.max_result_bytes plus 1 MiB): nothing was "
                "sent; pass less per call"
            ) from None

    def reset_budget(self) -> None:
        self.log_budget = self.max_log_bytes

    def log(self, level: str, message: str) -> None:
        if self.log_budget <= 0:
            return
        if len(message) > self.log_budget:
            message = message[: self.log_budget] + " [log budget exhausted: output dropped]"
            self.log_budget = 0
        else:
            self.log_budget -= len(message)
        self.send(protocol.Log(level=level, message=message, timestamp=time.time()))

    def notify(self, capability: int, method: str, args: tuple[Any, ...]) -> None:
        """A binding call nobody waits for: request id 0, the host sends no reply."""
        payload = protocol.encode([list(args), {}])
        self._send_call(
            protocol.BindingCall(request_id=0, capability=capability, method=method, args=payload)
        )

    def _start(
        self, capability: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> int:
        try:
            payload = protocol.encode([list(args), kwargs])
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"binding arguments must be plain data: {exc}") from None
        self.next_id += 1
        request_id = self.next_id
        self._send_call(
            protocol.BindingCall(
                request_id=request_id, capability=capability, method=method, args=payload
            )
        )
        return request_id

    def call(
        self, capability: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Send one call and wait for its reply (synchronous tenant code, workflow steps)."""
        request_id = self._start(capability, method, args, kwargs)
        while True:
            reply = protocol.to_sandbox.decode(self.socket.recv())
            if isinstance(reply, protocol.BindingReply):
                if reply.request_id == request_id:
                    return _outcome(reply)
                self._deliver(reply)  # a reply to a call async code still waits for

    def call_async(
        self, capability: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> aio.Pending:
        """Send one call now; its reply resolves the returned `Pending` (async tenant code)."""
        request_id = self._start(capability, method, args, kwargs)
        pending = aio.Pending()
        self.pending[request_id] = pending
        return pending

    def call_either(
        self, capability: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A `Pending` inside an async handler, the value itself in synchronous code."""
        if aio.running():
            return self.call_async(capability, method, args, kwargs)
        return self.call(capability, method, args, kwargs)

    # aio.IO: how the sandbox's loop waits for replies
    def has_pending(self) -> bool:
        return bool(self.pending)

    def wait(self, timeout: float | None) -> None:
        """Wait up to `timeout` seconds (None: until one arrives) and deliver what came."""
        if not self.socket.poll(None if timeout is None else max(int(timeout * 1000), 0)):
            return
        while True:
            reply = protocol.to_sandbox.decode(self.socket.recv())
            if isinstance(reply, protocol.BindingReply):
                self._deliver(reply)
            if not self.socket.poll(0):
                return

    def _deliver(self, reply: protocol.BindingReply) -> None:
        pending = self.pending.pop(reply.request_id, None)
        if pending is None:
            return  # a reply nobody waits for any more (its call was abandoned)
        try:
            pending.set_result(_outcome(reply))
        except Exception as exc:
            pending.set_error(exc)

    def end_invocation(self) -> None:
        """Forget calls an invocation left in flight: their replies are dropped on arrival."""
        self.pending.clear()


def _outcome(reply: protocol.BindingReply) -> Any:
    if reply.ok:
        return protocol.decode_plain(reply.value)
    error = reply.error
    message = error.message if error else "binding call failed"
    if error and error.kind == "capability":
        raise workers.CapabilityError(message)
    if error and error.kind == "rate_limit":
        raise workers.RateLimited(message)
    if error and error.kind == "binding" and error.type_name in HOST_ERRORS:
        raise HOST_ERRORS[error.type_name](message)
    raise workers.BindingError(message)


@register_safe_type
class BindingStub:
    """A binding as tenant code sees it: one callable per method the host granted."""

    def __init__(self, bridge: Bridge, name: str, capability: int, methods: list[str]) -> None:
        self._bridge = bridge
        self._name = name
        self._capability = capability
        self._methods = frozenset(methods)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or method not in self._methods:
            raise AttributeError(
                f"binding {self._name!r} has no method {method!r}; it offers "
                f"{sorted(self._methods)}"
            )
        bridge, capability = self._bridge, self._capability

        def call(*args: Any, **kwargs: Any) -> Any:
            return bridge.call_either(capability, method, args, kwargs)

        return call


class GrantTransport:
    """How a workflow's step object reaches the engine: the binding granted for this call."""

    def __init__(self, bridge: Bridge, capability: int) -> None:
        self._bridge = bridge
        self._capability = capability

    def call(self, method: str, *args: Any) -> Any:
        return self._bridge.call(self._capability, method, args, {})

    def notify(self, method: str, *args: Any) -> None:
        self._bridge.notify(self._capability, method, args)


def make_fetch(bridge: Bridge, outbound: list[int]) -> Any:
    """The tenant's global `fetch`: through the host's outbound handler, or refused.

    `outbound` holds the handler's capability id (0: none); it is set at specialisation.
    """

    def fetch(url: str, method: str = "GET", headers: Any = None, body: object = None) -> Any:
        if not outbound[0]:
            raise workers.FetchError(
                "this worker has no outbound access: the host gave it global_outbound=None"
            )
        request = workers.Request(url, method=method, headers=headers, body=body)
        data = protocol.RequestData(
            method=request.method,
            url=str(request.url),
            headers=request.headers.pairs(),
            body=request.body,
        )
        if not aio.running():
            try:
                reply = bridge.call(outbound[0], "fetch", (data,), {})
            except workers.BindingError as exc:
                raise workers.FetchError(str(exc)) from None
            return _response(reply)
        # `await fetch(url)`: a binding error becomes FetchError when the reply arrives.
        pending = bridge.call_async(outbound[0], "fetch", (data,), {})
        return aio.map_result(pending, _response, _fetch_error)

    return fetch


def _response(reply: Any) -> workers.Response:
    status, headers, body = reply
    response: workers.Response = workers.Response(body, status=status, headers=headers)
    return response


def _fetch_error(exc: BaseException) -> BaseException:
    return workers.FetchError(str(exc)) if isinstance(exc, workers.BindingError) else exc
