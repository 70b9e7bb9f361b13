"""Tenant log lines for the daemon: a bounded backlog per tenant, and live streams of them.

Host side. Tenant output reaches the logger `dynworkers.tenant` (see `runtime.handle`) as records
tagged with `tenant_id`; `TenantLogs.install()` puts a handler there. The handler may run on any
thread: it files the line in the tenant's backlog under a lock, and hands it to each subscriber on
the subscriber's event loop (`call_soon_threadsafe` when it is not on that loop's thread).
`stream()` serves one subscriber on the daemon's event loop as server-sent events.

While installed, the handler also decides what reaches the daemon's own log: tenant records are
captured whatever the daemon's log level, and passed on to the parent logger (`dynworkers`) only
at or above that logger's level, as if they had propagated. So `log_level = "warning"` keeps a
tenant's `console.log` out of the daemon's log but not out of the tenant's stream.

A tenant only ever sees its own lines: lines are filed by the record's tenant id and a stream is
opened for one tenant id. Memory stays bounded: `backlog` lines per tenant, `max_tenants` tenants
(the one that logged least recently is forgotten first), `queue_size` lines per subscriber; a
subscriber that falls behind loses lines and is told how many. A stream ends when its client goes
away or at `close()`, which also cuts off a stream stuck writing to a client that stopped reading,
so that shutdown never waits on one.

Each line has an `id`, increasing across tenants and across restarts (it starts from the clock,
in microseconds, when the daemon starts), sent as the event's `id:` field. A client that
reconnects with `Last-Event-ID` (a browser's EventSource does it by itself) gets every line of
the backlog after that id, then the live ones: nothing twice, and nothing missing unless the
backlog no longer holds it, in which case a notice says lines were lost (`"gap": true`).

The daemon's own log has two formats (`log_format`): `DaemonLogFormatter`, ISO time, level,
logger, `tenant=<id>`, message; and `JsonLogFormatter`, one JSON object a line. The JSON one is
the standard library's `json` over the record's fields, not python-json-logger: a dozen lines,
and no dependency for a setting every install has.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from aiohttp import web

from dynworkers.runtime import tracing
from dynworkers.runtime.errors import TenantError

TENANT_LOGGER = "dynworkers.tenant"

#: {"id": int, "tenant": str, "ts": epoch seconds, "level": "info", "message": str}; a notice
#: of lost lines has no "id", and has "dropped": how many (or "gap": true when not known)
Line = dict[str, Any]


class _Subscriber:
    """One open stream: a bounded queue of lines, filled and drained on its loop."""

    __slots__ = ("done", "dropped", "ended", "limit", "lines", "loop", "ready", "request", "thread")

    def __init__(self, limit: int, request: web.Request) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.lines: deque[Line] = deque()
        self.limit = limit
        self.dropped = 0
        self.ended = False
        self.ready = asyncio.Event()  # lines came, or the stream should end
        self.done = asyncio.Event()  # the stream has left
        self.request = request

    def offer(self, line: Line) -> None:
        """Queue a line; past the limit, count it as dropped instead."""
        if self.ended:
            return
        if len(self.lines) >= self.limit:
            self.dropped += 1
            return
        if self.dropped:  # the gap comes before this line
            self.lines.append(_dropped_notice(line["tenant"], self.dropped))
            self.dropped = 0
        self.lines.append(line)
        self.ready.set()

    def end(self, cut: bool = False) -> None:
        """Send what is queued, then end; `cut`: drop the connection now."""
        self.ended = True
        self.ready.set()
        transport = self.request.transport
        if cut and transport is not None:
            transport.abort()


def _dropped_notice(tenant: str, count: int) -> Line:
    return {
        "tenant": tenant,
        "ts": time.time(),
        "level": "warning",
        "message": f"[{count} log lines dropped: this stream could not keep up]",
        "dropped": count,
    }


def _gap_notice(tenant: str, backlog: int) -> Line:
    return {
        "tenant": tenant,
        "ts": time.time(),
        "level": "warning",
        "message": f"[log lines were lost since the last event seen: the daemon keeps the last "
        f"{backlog} lines of a tenant]",
        "gap": True,
    }


def _event(line: Line) -> bytes:
    # json escapes newlines: a multi-line message stays one `data:` field
    data = b"data: " + json.dumps(line, separators=(",", ":")).encode() + b"\n\n"
    ident = line.get("id")
    return data if ident is None else b"id: %d\n" % ident + data


def last_event_id(request: web.Request) -> int | None:
    """The id a reconnecting client saw last: the `Last-Event-ID` header (or the query's
    `last_event_id`, for a client that cannot set headers); ValueError when it is no id."""
    value = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if not value:
        return None
    try:
        ident = int(value)
    except ValueError:
        raise ValueError(
            f"Last-Event-ID must be the id of a log line (an integer), got {value[:40]!r}"
        ) from None
    if ident < 0:
        raise ValueError(f"Last-Event-ID must be >= 0, got {ident}")
    return ident


class _Handler(logging.Handler):
    """The one handler on `dynworkers.tenant` while any `TenantLogs` is installed (a process
    may run several daemons: each gets every line, and the daemon's log gets each once)."""

    def __init__(self, saved: tuple[int, bool]) -> None:
        super().__init__()  # every level: the daemon's log may want what the streams do not
        self.sinks: list[TenantLogs] = []
        self.saved = saved  # the logger's level and propagate flag before the first install

    def emit(self, record: logging.LogRecord) -> None:
        tenant = getattr(record, "tenant_id", None)
        sinks = [sink for sink in self.sinks if record.levelno >= sink.level]
        if sinks and isinstance(tenant, str) and tenant:
            try:
                message = record.getMessage()
            except Exception:
                self.handleError(record)
                return
            ts = getattr(record, "tenant_timestamp", None)
            if not isinstance(ts, int | float) or not math.isfinite(ts):
                ts = record.created
            level = record.levelname.lower()
            line = {"tenant": tenant, "ts": float(ts), "level": level, "message": message}
            for sink in sinks:
                sink.add(line)
        parent = logging.getLogger(TENANT_LOGGER).parent
        if parent is not None and parent.isEnabledFor(record.levelno):
            parent.handle(record)  # what propagation would do, at the daemon's level


_handler: _Handler | None = None
_handler_lock = threading.Lock()


class TenantLogs:
    def __init__(
        self,
        backlog: int = 1000,
        *,
        queue_size: int = 1000,
        max_tenants: int = 10_000,
        heartbeat: float = 15.0,
    ) -> None:
        if backlog < 0 or queue_size < 1 or max_tenants < 1 or heartbeat <= 0:
            raise ValueError(
                "TenantLogs needs backlog >= 0, queue_size >= 1, max_tenants >= 1, heartbeat > 0"
            )
        self.backlog = backlog
        self.queue_size = queue_size
        self.max_tenants = max_tenants
        #: seconds between `: keep-alive` comments on an idle stream
        self.heartbeat = heartbeat
        self._lock = threading.Lock()  # backlogs and subscriber sets, touched from any thread
        self._backlogs: OrderedDict[str, deque[Line]] = OrderedDict()
        self._subscribers: dict[str, set[_Subscriber]] = {}
        #: the id of the newest line each tenant's backlog let go (to tell a resume it lost some)
        self._trimmed: dict[str, int] = {}
        self._last_id = time.time_ns() // 1000  # ids go on increasing after a restart
        self.level = logging.DEBUG  # the least level captured, set by install()
        self.closed = False

    # --- the logger ------------------------------------------------------------------------------

    def install(self, level: int = logging.DEBUG) -> None:
        """Capture the tenants' records at `level` and above, whatever the daemon's log level."""
        global _handler
        with _handler_lock:
            if _handler is None:
                logger = logging.getLogger(TENANT_LOGGER)
                _handler = _Handler((logger.level, logger.propagate))
                logger.setLevel(logging.DEBUG)
                logger.propagate = False  # the handler passes records on at the parent's level
                logger.addHandler(_handler)
            if self not in _handler.sinks:
                self.level = level
                _handler.sinks.append(self)

    def uninstall(self) -> None:
        global _handler
        with _handler_lock:
            if _handler is None or self not in _handler.sinks:
                return
            _handler.sinks.remove(self)
            if not _handler.sinks:
                logger = logging.getLogger(TENANT_LOGGER)
                logger.removeHandler(_handler)
                logger.setLevel(_handler.saved[0])
                logger.propagate = _handler.saved[1]
                _handler = None

    def tenant_error(self, tenant: str, exc: TenantError) -> None:
        """Log an uncaught tenant error, with the tenant's own frames, at error level: to the
        tenant's stream and to the daemon's log."""
        message = f"uncaught {exc.type_name}: {exc.message}"
        if exc.traceback:
            message += "\n" + "\n".join(exc.traceback)
        logging.getLogger(TENANT_LOGGER).error(
            "%s", message, extra={"tenant_id": tenant, "tenant_timestamp": time.time()}
        )

    # --- lines -----------------------------------------------------------------------------------

    def add(self, line: Line) -> None:
        """File a line under `line["tenant"]` and hand it to that tenant's streams."""
        tenant = line["tenant"]
        with self._lock:
            self._last_id += 1
            line = {"id": self._last_id, **line}
            lines = self._backlogs.get(tenant)
            if lines is None:
                lines = self._backlogs[tenant] = deque(maxlen=self.backlog)
                if len(self._backlogs) > self.max_tenants:
                    forgotten, _ = self._backlogs.popitem(last=False)
                    self._trimmed.pop(forgotten, None)
            else:
                self._backlogs.move_to_end(tenant)
            if lines.maxlen is not None and len(lines) == lines.maxlen:
                self._trimmed[tenant] = lines[0]["id"] if lines else line["id"]
            lines.append(line)
            subscribers = list(self._subscribers.get(tenant, ()))
        here = threading.get_ident()
        for subscriber in subscribers:
            if subscriber.thread == here:
                subscriber.offer(line)
            else:
                with contextlib.suppress(RuntimeError):  # its loop is closed: stream gone
                    subscriber.loop.call_soon_threadsafe(subscriber.offer, line)

    def lines(self, tenant: str, tail: int | None = None) -> list[Line]:
        """The tenant's backlog, oldest first; only the last `tail` lines if given."""
        with self._lock:
            lines = list(self._backlogs.get(tenant, ()))
        return lines if tail is None else lines[len(lines) - max(0, tail) :]

    # --- streams ---------------------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        """Live streams now (those that follow new lines)."""
        with self._lock:
            return sum(len(group) for group in self._subscribers.values())

    async def stream(
        self,
        request: web.Request,
        tenant: str,
        tail: int,
        *,
        follow: bool = False,
        after: int | None = None,
    ) -> web.StreamResponse:
        """Server-sent events: the last `tail` lines of the backlog (or, with `after`, the
        Last-Event-ID, every line after that id), then with `follow` the live lines, each as
        `id: <id>` and `data: <json>`; a `: keep-alive` comment when idle for `heartbeat` s."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a proxy must pass lines on as they come
            }
        )
        await response.prepare(request)
        subscriber = _Subscriber(self.queue_size, request)
        with self._lock:  # backlog and subscription at one instant: no line twice, none lost
            backlog = list(self._backlogs.get(tenant, ()))
            lost = after is not None and self._trimmed.get(tenant, 0) > after
            if follow and not self.closed:
                self._subscribers.setdefault(tenant, set()).add(subscriber)
            else:
                subscriber.ended = True
        if after is not None:
            if lost:
                subscriber.lines.append(_gap_notice(tenant, self.backlog))
            subscriber.lines.extend(line for line in backlog if line["id"] > after)
        elif tail > 0:
            subscriber.lines.extend(backlog[-tail:])
        try:
            await self._pump(response, subscriber, tenant)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away, or close() cut it off
        finally:
            with self._lock:
                subscribers = self._subscribers.get(tenant)
                if subscribers is not None:
                    subscribers.discard(subscriber)
                    if not subscribers:
                        del self._subscribers[tenant]
            subscriber.done.set()
        return response

    async def _pump(self, response: web.StreamResponse, sub: _Subscriber, tenant: str) -> None:
        last_write = time.monotonic()
        while True:
            if sub.lines:
                data = _event(sub.lines.popleft())
            elif sub.dropped:
                data = _event(_dropped_notice(tenant, sub.dropped))
                sub.dropped = 0
            elif sub.ended:
                return
            else:
                transport = sub.request.transport
                if transport is None or transport.is_closing():
                    raise ConnectionResetError("the client went away")
                idle = self.heartbeat - (time.monotonic() - last_write)
                if idle > 0:
                    sub.ready.clear()
                    # wake at least every second, to notice a client that went away
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(sub.ready.wait(), min(idle, 1.0))
                    continue
                data = b": keep-alive\n\n"
            await response.write(data)
            last_write = time.monotonic()

    async def close(self, timeout: float = 2.0) -> None:
        """End every open stream and wait (up to `timeout` s) for them to leave: each sends
        what it has queued; one whose client stopped reading is cut off. Streams opened later
        send their backlog and end. The backlogs stay readable."""
        with self._lock:
            self.closed = True
            subscribers = [s for group in self._subscribers.values() for s in group]
        loop = asyncio.get_running_loop()
        here = [s for s in subscribers if s.loop is loop]
        for subscriber in subscribers:
            if subscriber.loop is loop:
                subscriber.end()
            else:
                with contextlib.suppress(RuntimeError):  # its loop is closed: nothing to end
                    subscriber.loop.call_soon_threadsafe(subscriber.end)
        if not here:
            return
        waits = [loop.create_task(s.done.wait()) for s in here]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        for subscriber in here:
            if not subscriber.done.is_set():
                subscriber.end(cut=True)  # stuck writing to a client that does not read


#: attributes every LogRecord has: the rest are a call's `extra` fields
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def daemon_formatter(log_format: str) -> logging.Formatter:
    """The formatter for the daemon's log: "text" or "json" (the `log_format` setting)."""
    return JsonLogFormatter() if log_format == "json" else DaemonLogFormatter()


class JsonLogFormatter(logging.Formatter):
    """`{"time": ISO, "level": "INFO", "logger": ..., "message": ..., "tenant": ...}` and the
    record's extra fields (the access log's method, path, status, ...); `exception` holds a
    traceback; `trace_id` and `span_id` the OpenTelemetry span current when it was logged."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created).astimezone()
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and value is not None:
                entry["tenant" if name == "tenant_id" else name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        if tracing.ENABLED:
            entry.update(tracing.log_ids())
        return json.dumps(entry, default=str, separators=(",", ":"))


class DaemonLogFormatter(logging.Formatter):
    """`2025-01-31T12:00:00.123+01:00 INFO dynworkers.tenant tenant=acme message`: local time
    with its offset, then the level, the logger, the tenant for tenant records, the message."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.datetime.fromtimestamp(record.created).astimezone()
        return moment.isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        parts = [self.formatTime(record), record.levelname, record.name]
        tenant = getattr(record, "tenant_id", None)
        if tenant:
            parts.append(f"tenant={tenant}")
        parts.append(record.message)
        text = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text
