"""The `workers` module that tenant code imports.

Runs inside a sandbox, in the thread that runs tenant code. Names follow Cloudflare's Python
Workers so that a tenant reading their docs feels at home: `WorkerEntrypoint` (with `self.env` and
`self.ctx`), `Request`, `Response`, `console`, `fetch`. Every class here is registered with the
policy's attribute guard, so tenant code reads its public attributes and nothing else.

Failures are ordinary exceptions raised into tenant code: `TypeError` for a body that is not text
or bytes, `InvalidHeader` (a `ValueError`) for a response header whose name is not an HTTP token
or whose value holds CR, LF, NUL or another control character (the front door answers it 502),
`CapabilityError` for a binding the host refuses, `FetchError` when the tenant has no outbound
handler, `PayloadTooLarge` for a binding call over the frame limit, `RateLimited` when
the tenant's binding calls exceed the host's rate (both are `BindingError`s).
"""

from __future__ import annotations

import json as _json
import re as _re
from collections.abc import Callable, Mapping
from typing import Any

from dynworkers.engine.replay import (
    NonDeterminismError,
    NonRetryableError,
    StepError,
    WaitTimeout,
    WorkflowEntrypoint,
)
from dynworkers.sandbox_policy.guards import register_writable_type
from dynworkers.sandbox_policy.namespace import register_safe_type


@register_safe_type
class CapabilityError(Exception):
    """The host refused a binding call: the binding or method is not granted to this tenant."""


@register_safe_type
class BindingError(Exception):
    """A granted binding call failed on the host side; the message says why."""


@register_safe_type
class FetchError(Exception):
    """An outbound fetch failed, or this tenant has no outbound access at all."""


@register_safe_type
class PayloadTooLarge(BindingError, ValueError):
    """A binding call's arguments are over the channel's frame limit: nothing was sent."""


@register_safe_type
class RateLimited(BindingError):
    """This tenant made binding calls faster than the host allows; slow down and retry."""


class InvalidHeader(ValueError):
    """A response header the HTTP front door could not send as given."""


#: RFC 9110: a field name is a token; a value holds no CR, LF, NUL or other control but tab
_HEADER_NAME = _re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = _re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")


def _checked_header(name: object, value: object) -> tuple[str, str]:
    name, value = str(name), str(value)
    if not _HEADER_NAME.match(name):
        raise InvalidHeader(
            f"response header name {name!r} is not valid: use letters, digits and "
            "!#$%&'*+-.^_`|~ only"
        )
    if not _HEADER_VALUE.match(value):
        raise InvalidHeader(
            f"response header {name!r} has a value with CR, LF, NUL or another control "
            f"character: {value!r}; remove them"
        )
    return name.lower(), value


@register_safe_type
class Headers(dict[str, str]):
    """A response's headers: lower-case names, each checked when it is set."""

    def __init__(self, headers: Any = None) -> None:
        super().__init__()
        if headers is not None:
            self.update(headers)

    def __setitem__(self, name: object, value: object) -> None:
        key, checked = _checked_header(name, value)
        super().__setitem__(key, checked)

    def update(self, headers: Any = (), **more: object) -> None:  # type: ignore[override]
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in [*pairs, *more.items()]:
            self[name] = value

    def setdefault(self, name: object, value: object = "") -> str:
        key, checked = _checked_header(name, value)
        return str(super().setdefault(key, checked))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("set a header as an item: response.headers[name] = value")


# Tenant code sets headers as items (`response.headers["x"] = "y"`), each checked above.
register_writable_type(Headers)


def _lower_headers(headers: Mapping[str, str] | list[tuple[str, str]] | None) -> dict[str, str]:
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return {str(k).lower(): str(v) for k, v in pairs}


def _body_bytes(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    raise TypeError(f"a body must be str or bytes, got {type(body).__name__}")


@register_safe_type
class Request:
    """An incoming HTTP request as a tenant's fetch handler sees it."""

    def __init__(
        self, url: str, method: str = "GET", headers: Any = None, body: object = None
    ) -> None:
        self.url = url
        self.method = method.upper()
        self.headers = _lower_headers(headers)
        self.body = _body_bytes(body)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.body)


@register_safe_type
class Response:
    """What a fetch handler returns: `Response(body, status=200, headers=None)`."""

    def __init__(self, body: object = None, status: int = 200, headers: Any = None) -> None:
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an int between 100 and 599, got {status!r}")
        self.body = _body_bytes(body)
        self.status = status
        self.headers = Headers(headers)

    @staticmethod
    def json(obj: object, status: int = 200, headers: Any = None) -> Response:
        merged = Headers({"content-type": "application/json"})
        merged.update(headers or {})
        return Response(_json.dumps(obj), status=status, headers=merged)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@register_safe_type
class Context:
    """`self.ctx`: the props the host gave this entrypoint."""

    def __init__(self, props: Any) -> None:
        self.props = props


@register_safe_type
class Env:
    """`self.env`: plain data copied in and binding stubs, as attributes."""

    def __init__(self, entries: Mapping[str, object]) -> None:
        for name, value in entries.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("env is read-only")


@register_safe_type
class WorkerEntrypoint:
    """Base class of a tenant's entrypoints; `Default` is the one `fetch` reaches."""

    def __init__(self, ctx: Context, env: Env) -> None:
        self.ctx = ctx
        self.env = env


@register_safe_type
class Console:
    """`console.log(...)`: per-tenant log records, collected by the host with the tenant's id."""

    def __init__(self, emit: Callable[[str, str], None]) -> None:
        self._emit = emit

    def _write(self, level: str, args: tuple[object, ...]) -> None:
        self._emit(level, " ".join(a if isinstance(a, str) else repr(a) for a in args))

    def log(self, *args: object) -> None:
        self._write("info", args)

    def info(self, *args: object) -> None:
        self._write("info", args)

    def debug(self, *args: object) -> None:
        self._write("debug", args)

    def warn(self, *args: object) -> None:
        self._write("warning", args)

    def error(self, *args: object) -> None:
        self._write("error", args)


@register_safe_type
class WorkersModule:
    """What `import workers` gives a tenant: only the names below, never a real module."""

    def __init__(self, console: Console, fetch: Callable[..., Response]) -> None:
        self.WorkerEntrypoint = WorkerEntrypoint
        self.Request = Request
        self.Response = Response
        self.CapabilityError = CapabilityError
        self.BindingError = BindingError
        self.FetchError = FetchError
        self.PayloadTooLarge = PayloadTooLarge
        self.RateLimited = RateLimited
        self.InvalidHeader = InvalidHeader
        self.WorkflowEntrypoint = WorkflowEntrypoint
        self.NonRetryableError = NonRetryableError
        self.StepError = StepError
        self.WaitTimeout = WaitTimeout
        self.NonDeterminismError = NonDeterminismError
        self.console = console
        self.fetch = fetch

    def __setattr__(self, name: str, value: object) -> None:
        if name in self.__dict__:
            raise AttributeError("the workers module is read-only")
        object.__setattr__(self, name, value)
