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
from dynworkers.sandbox_policy import aio
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


@register_safe_type
class Headers(dict[str, str]):
    """HTTP headers as Cloudflare's: names case-insensitive, a name given twice keeps both values.

    A `dict` of lower-case name -> value, so `headers["Content-Type"]`, `.get("content-type")`,
    `"X-A" in headers` and `dict(headers)` all work; a repeated header reads as its values joined
    with ", " (as the Fetch standard's `get`), except `Set-Cookie`, whose values stay apart on the
    wire (`get_all("set-cookie")`, or `getSetCookie()` as in JavaScript).
    """

    def __init__(self, init: Any = None) -> None:
        super().__init__()
        self._cookies: list[str] = []
        if init is None:
            return
        pairs = init.items() if isinstance(init, Mapping) else init
        if isinstance(init, Headers):
            pairs = init.pairs()
        for name, value in pairs:
            self.append(name, value)

    def append(self, name: str, value: str) -> None:
        key, text = _name(name), _value(name, value)
        if key == "set-cookie":
            self._cookies.append(text)
        current = dict.get(self, key)
        dict.__setitem__(self, key, text if current is None else f"{current}, {text}")

    def set(self, name: str, value: str) -> None:
        key, text = _name(name), _value(name, value)
        if key == "set-cookie":
            self._cookies = [text]
        dict.__setitem__(self, key, text)

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, _name(name))

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, _name(name), default)

    def has(self, name: str) -> bool:
        return dict.__contains__(self, _name(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    def delete(self, name: str) -> None:
        key = _name(name)
        dict.pop(self, key, None)
        if key == "set-cookie":
            self._cookies = []

    def __delitem__(self, name: str) -> None:
        self.delete(name)

    def get_all(self, name: str) -> list[str]:
        key = _name(name)
        if key == "set-cookie":
            return list(self._cookies)
        value = dict.get(self, key)
        return [] if value is None else [value]

    def getSetCookie(self) -> list[str]:  # the Fetch standard's name
        return list(self._cookies)

    def pairs(self) -> list[tuple[str, str]]:
        """Every header as sent on the wire: one pair per Set-Cookie value."""
        out: list[tuple[str, str]] = []
        for key, value in dict.items(self):
            if key == "set-cookie":
                out.extend((key, cookie) for cookie in self._cookies)
            else:
                out.append((key, value))
        return out


register_writable_type(Headers)


def _name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a header name must be a non-empty str, got {name!r}")
    if not _HEADER_NAME.match(name):
        raise InvalidHeader(
            f"response header name {name!r} is not valid: use letters, digits and "
            "!#$%&'*+-.^_`|~ only"
        )
    return name.lower()


def _value(name: object, value: object) -> str:
    text = str(value)
    if not _HEADER_VALUE.match(text):
        raise InvalidHeader(
            f"response header {name!r} has a value with CR, LF, NUL or another control "
            f"character: {text!r}; remove them"
        )
    return text


def _lower_headers(headers: Mapping[str, str] | list[tuple[str, str]] | None) -> dict[str, str]:
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return {str(k).lower(): str(v) for k, v in pairs}


def _body_bytes(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    raise TypeError(f"a body must be str or bytes, got {type(body).__name__}")


class _JsonMember:
    """`Response.json(obj)` builds a JSON response (as Cloudflare's); `response.json()` on a
    response (one `fetch` returned) parses its body, awaitable inside an async handler."""

    def __get__(self, obj: Any, cls: Any = None) -> Callable[..., Any]:
        if obj is None:
            return _json_response
        return lambda: aio.ready(_json.loads(obj.body))


#: Statuses a redirect may carry (the Fetch standard's redirect statuses).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

TEXT_PLAIN = "text/plain;charset=UTF-8"
APPLICATION_JSON = "application/json"


@register_safe_type
class Request:
    """An incoming HTTP request as a tenant's fetch handler sees it.

    `text()` and `json()` return the body at once in synchronous code and an awaitable inside an
    `async def` handler, so `await request.json()` works as on Cloudflare.
    """

    def __init__(
        self, url: str, method: str = "GET", headers: Any = None, body: object = None
    ) -> None:
        self.url = url
        self.method = method.upper()
        self.headers = Headers(headers)
        self.body = _body_bytes(body)

    def text(self) -> Any:
        return aio.ready(self.body.decode("utf-8", errors="replace"))

    def json(self) -> Any:
        return aio.ready(_json.loads(self.body))

    def bytes(self) -> Any:
        return aio.ready(self.body)


@register_safe_type
class Response:
    """What a fetch handler returns: `Response(body, status=200, headers=None)`.

    A `str` body is sent as `text/plain;charset=UTF-8` unless the headers name a content type
    (Cloudflare's default); a `bytes` body gets no content type of its own. `Response.json(obj)`
    is `application/json`, `Response.redirect(url, status=302)` a redirect.
    """

    def __init__(self, body: object = None, status: int = 200, headers: Any = None) -> None:
        if type(status) is not int or not 100 <= status <= 599:
            raise ValueError(f"status must be an int between 100 and 599, got {status!r}")
        self.body = _body_bytes(body)
        self.status = status
        self.headers = Headers(headers)
        if isinstance(body, str) and "content-type" not in self.headers:
            self.headers.set("content-type", TEXT_PLAIN)

    json = _JsonMember()

    @staticmethod
    def redirect(url: str, status: int = 302) -> Response:
        if status not in REDIRECT_STATUSES:
            raise ValueError(
                f"a redirect status is one of {sorted(REDIRECT_STATUSES)}, got {status!r}"
            )
        return Response(None, status=status, headers={"location": str(url)})

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    def text(self) -> Any:
        return aio.ready(self.body.decode("utf-8", errors="replace"))

    def bytes(self) -> Any:
        return aio.ready(self.body)


def _json_response(obj: object, status: int = 200, headers: Any = None) -> Response:
    merged = Headers({"content-type": APPLICATION_JSON})
    for name, value in Headers(headers).pairs():
        merged.set(name, value)
    return Response(_json.dumps(obj).encode(), status=status, headers=merged)


@register_safe_type
class Context:
    """`self.ctx`: the props the host gave this entrypoint."""

    def __init__(self, props: Any) -> None:
        self.props = props


@register_safe_type
class ScheduledController:
    """What `scheduled(self, controller, env, ctx)` receives: `cron` (the expression that fired),
    `scheduled_time` (epoch milliseconds of the tick) and `type` ("scheduled"), as Cloudflare's."""

    def __init__(self, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        self.cron = str(data.get("cron", ""))
        self.scheduled_time = data.get("scheduled_time", data.get("scheduledTime", 0))
        self.type = "scheduled"

    @property
    def scheduledTime(self) -> Any:  # the JavaScript name
        return self.scheduled_time


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
        self.Headers = Headers
        self.ScheduledController = ScheduledController
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
