"""The daemon's listeners under load and abuse: a connection cap, read timeouts, a quiet log.

Host side, on the daemon's event loop. `GuardedSite` is an aiohttp `TCPSite` whose connections go
through `ConnectionGuard`:

- at most `cap` connections at once per listener: one more is answered `503` and closed at once,
  so a flood of idle connections to the front door cannot use up the file descriptors that the
  control listener (a site of its own, with its own cap) needs;
- a client that has begun a request head must finish it within `header_timeout` seconds (else
  `408` and the connection is closed); a connection with nothing to say is closed after
  `keepalive_timeout` by aiohttp itself, counted from its start and from each response;
- `read_body` bounds reading a request's body with `body_timeout` (`BodyTimeout`, answered 408).

`quiet_server_log()` is the logger handed to aiohttp: a malformed request (bad request line,
oversized header, broken chunking) becomes one WARNING line without a traceback, and at most
`WARNINGS_PER_MINUTE` of them a minute reach the log, so that a client cannot fill it.

`raise_fd_limit` lifts the soft RLIMIT_NOFILE to what the caps need, up to the hard limit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from dynworkers.runtime.errors import DynworkersError

log = logging.getLogger("dynworkers.daemon")

HTTP_LOGGER = "dynworkers.http"
WARNINGS_PER_MINUTE = 10
#: file descriptors kept free beyond the listeners' caps: sandboxes' sockets, the store, logs
FD_RESERVE = 256
_REFUSED_BODY = (
    b'{"error": "TooManyConnections", "message": "the listener is at its connection cap '
    b'(max_connections); retry later"}'
)
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nRetry-After: 1\r\n"
    + f"Content-Length: {len(_REFUSED_BODY)}\r\n\r\n".encode()
    + _REFUSED_BODY
)
HEAD_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class BodyTimeout(DynworkersError, TimeoutError):
    """The client did not send the request body within `body_timeout`."""


async def read_body(request: web.Request, seconds: float) -> bytes:
    if not request.can_read_body:
        return b""
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {seconds:g} s (body_timeout); "
            "send it at once, or raise body_timeout in the daemon's config"
        ) from None


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclasses of asyncio.Transport, though they are ones
        transport = cast(asyncio.Transport, transport)
        transport.write(REFUSED)
        transport.close()


class _Guarded(asyncio.Protocol):
    """Forwards every event to aiohttp's protocol; times the head of each request.

    The head's timer is lazy: it stays armed across the requests of a keep-alive connection and,
    when it fires for a head that has since completed, re-arms for the current one (or lapses
    when no head is being read). A busy connection so costs a loop timer once per
    `header_timeout`, not a timer and a cancel per request."""

    __slots__ = ("awaiting_head", "guard", "head_started", "inner", "loop", "timer", "transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.awaiting_head = True
        #: loop time the first byte of the head being read arrived; None between requests
        self.head_started: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        # counted from here: asyncio accepts a batch of connections before any is "made"
        guard.open[inner] = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # as in _Refused
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.awaiting_head and self.head_started is None:  # the first byte of a request head
            self.head_started = started = self.loop.time()
            if self.timer is None:
                self.timer = self.loop.call_at(started + self.guard.header_timeout, self._head_late)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        keep_open = self.inner.eof_received()
        if not keep_open:
            # The transport closes now (connection_lost follows). Counted out at once: uvloop
            # may accept a new connection before it delivers that connection_lost, and the
            # new one must find the room the closed one left.
            self.guard.open.pop(self.inner, None)
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.guard.open.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def head_done(self) -> None:
        self.awaiting_head = False
        self.head_started = None  # the armed timer, if any, finds no head and lapses

    def response_done(self) -> None:
        self.awaiting_head = True

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _head_late(self) -> None:
        self.timer = None
        started = self.head_started
        if not self.awaiting_head or started is None:
            return  # no head being read now: the next one arms a timer of its own
        due = started + self.guard.header_timeout
        if self.loop.time() < due:  # armed for an earlier head: the rest of this one's time
            self.timer = self.loop.call_at(due, self._head_late)
            return
        if self.transport is not None and not self.transport.is_closing():
            self.guard.timed_out += 1
            self.transport.write(HEAD_TIMEOUT)
            self.transport.close()


class ConnectionGuard:
    def __init__(self, cap: int, header_timeout: float) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        #: aiohttp's protocol -> our wrapper, for every open connection
        self.open: dict[object, _Guarded] = {}
        self.refused = 0
        self.timed_out = 0

    def factory(self, server: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            if len(self.open) >= self.cap:
                self.refused += 1
                return _Refused()
            return _Guarded(self, server())

        return make

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
    ) -> Any:
        """The head is in once a handler runs; the next head's clock starts after it."""
        connection = self.open.get(request.protocol)
        if connection is not None:
            connection.head_done()
        try:
            return await handler(request)
        finally:
            if connection is not None:
                connection.response_done()


class GuardedSite(web.TCPSite):
    """A TCP listener whose connections pass through a `ConnectionGuard`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self.guard.factory(server), self._host, self._port, backlog=self._backlog
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


class _MalformedRequests(logging.Filter):
    """aiohttp's `log_exception` for a bad request, as one rate-limited WARNING line."""

    def __init__(self) -> None:
        super().__init__()
        self.window = 0.0
        self.count = 0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        now = time.monotonic()
        if now - self.window >= 60.0:
            self.window, self.count = now, 0
        self.count += 1
        if self.count > WARNINGS_PER_MINUTE:
            self.suppressed += 1
            return False
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        if exc is not None:
            text += f": {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        if self.suppressed:
            text += f" ({self.suppressed} more since the last one were not logged)"
        record.msg = text
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self.suppressed = 0
        return True


def quiet_server_log() -> logging.Logger:
    logger = logging.getLogger(HTTP_LOGGER)
    if not any(isinstance(f, _MalformedRequests) for f in logger.filters):
        logger.addFilter(_MalformedRequests())
    return logger


def raise_fd_limit(needed: int) -> int:
    """Lift the soft limit on open files towards `needed` (not past the hard limit); the
    limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit to %d: %s", needed, exc)
    return int(soft) if soft != resource.RLIM_INFINITY else needed
