"""The tenant front door: HTTP requests to tenants' `fetch`, and failures as typed HTTP answers.

Host side, an aiohttp application on the daemon's event loop. `/<tenant>/<path>` reaches tenant
`<tenant>` with the URL `http://<host>/<path>` (the tenant sees itself at the root); with a
`domain` configured, a request whose Host is `<tenant>.<domain>` reaches it with its whole path.
The header `X-Forwarded-Prefix` tells the tenant where it is mounted (`/<tenant>` or empty), so
it can build its own links. With `trust_forwarded` on (the daemon behind a proxy), the scheme and
host of that URL, and the Host that `domain` routing reads, come from the first value of
`X-Forwarded-Proto` (http or https) and `X-Forwarded-Host`; a value that is not a scheme or a
host is ignored. Off (the default), those headers reach the tenant as any other header and
change nothing, so a client cannot choose the URL its tenant sees.
Nothing here serves the control API: `/_/` and every other path that names no valid tenant is 404.

Every failure stays with its request and its tenant:

    body over max_body_bytes      413      unknown tenant        404
    code does not compile         500 + the compile errors, module and line (*)
    tenant code raised            500 + the tenant's traceback lines, never the host's (*)
    past the deadline             504      sandbox crashed      502
    tenant busy / daemon closing  503      body not sent within body_timeout   408
    invalid response header       502 (a name that is not an HTTP token, a value with CR, LF
                                  or NUL: refused by the sandbox's `Response`, and checked
                                  again here for anything that got past it)
    still running when the drain ends (shutdown)   503

(*) Only with `expose_errors` on. Off (the daemon's default), the answer names the failure
("TenantError" or "CompileError") and the tenant, and says where to look: the details go to the
tenant's log stream and the daemon's log, never to whoever sent the request, since a traceback
shows the tenant's source, file names and the values in it. Turn it on for development.

With `access_log` on, each request is one INFO line on the logger `dynworkers.access` (method,
path, status, bytes, milliseconds, tenant, client address; as fields in the JSON log format).
Each answer also reaches `observe(seconds, status, tenant, error)`, the daemon's metrics; the
tenant is None for a name that is no tenant. With OpenTelemetry installed (runtime.tracing) each
request is a server span, continuing the caller's trace from its `traceparent` header.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from dynworkers.loader import CompileError
from dynworkers.runtime import tracing
from dynworkers.runtime.daemon.connections import BodyTimeout, read_body
from dynworkers.runtime.daemon.deployments import TENANT_ID, InvalidTenant
from dynworkers.runtime.daemon.tenants import Tenants, UnknownTenant
from dynworkers.runtime.errors import (
    PoolBusy,
    SandboxCrashed,
    SandboxError,
    SandboxTimeout,
    SupervisorClosed,
    TenantError,
)

log = logging.getLogger("dynworkers.front")
access = logging.getLogger("dynworkers.access")

#: headers a tenant's response may not set: aiohttp frames the body itself
HOP_BY_HOP = frozenset(
    {"connection", "content-length", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}
)
#: RFC 9110 field names (tokens) and values (no CR, LF, NUL or other control but tab)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
#: most valid header names remembered (forgotten all at once past it: tenants choose names)
VALID_NAMES_KEPT = 1024
#: the type the sandbox's `Response` raises for a bad header (runtime.sandbox.workers)
INVALID_HEADER = "InvalidHeader"
#: the path a tenant is mounted at ("/<tenant>", or "" when routed by Host), set by the daemon
PREFIX_HEADER = "x-forwarded-prefix"
#: what a forwarded host may be: a DNS name or an IP literal, with an optional port
FORWARDED_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


class Served:
    """What the metrics and the access log learn of one request: the tenant it named, the kind
    of failure it was answered with. `handle` makes one a request, in a context variable, so
    that `error()` can note its kind wherever the answer is made."""

    __slots__ = ("error", "tenant")

    def __init__(self) -> None:
        self.tenant: str | None = None
        self.error: str | None = None


_served: contextvars.ContextVar[Served | None] = contextvars.ContextVar(
    "dynworkers_served", default=None
)
#: (seconds, status, tenant or None, error kind or None), once per answered request
DispatchObserver = Callable[[float, int, str | None, str | None], None]
TenantErrorSink = Callable[[str, TenantError], None]


def error(status: int, kind: str, message: str, **extra: Any) -> web.Response:
    served = _served.get()
    if served is not None:
        served.error = kind
    return web.json_response({"error": kind, "message": message, **extra}, status=status)


def compile_errors(exc: CompileError) -> list[dict[str, Any]]:
    return [
        {"module": module, "line": line, "message": message} for module, line, message in exc.errors
    ]


class FrontDoor:
    def __init__(
        self,
        tenants: Tenants,
        max_body_bytes: int,
        domain: str = "",
        observe: DispatchObserver | None = None,
        tenant_error: TenantErrorSink | None = None,
        body_timeout: float = 30.0,
        trust_forwarded: bool = False,
        expose_errors: bool = False,
        access_log: bool = False,
    ) -> None:
        self.tenants = tenants
        self.trust_forwarded = trust_forwarded
        self.max_body_bytes = max_body_bytes
        self.domain = domain
        self.observe = observe
        self.tenant_error = tenant_error
        self.body_timeout = body_timeout
        #: tenant tracebacks and compile errors in answers (development), see the docstring
        self.expose_errors = expose_errors
        self.access_log = access_log
        self.in_flight = 0
        #: the tasks serving tenant requests, answered 503 by `abort` at the end of a drain
        self._running: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None
        self.aborting = False
        #: the serving loop, learnt on the first request: asyncio.current_task() without it
        #: looks the loop up, a getpid() system call per request on Python 3.11
        self._loop: asyncio.AbstractEventLoop | None = None
        #: response header names found valid, and their lower case (names repeat: a regex match
        #: and a lower() per header per response, saved)
        self._valid_names: dict[str, str] = {}

    def app(self) -> web.Application:
        # client_max_size: aiohttp refuses a larger body itself; `handle` words the 413.
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    def origin(self, request: web.Request) -> tuple[str, str]:
        """(scheme, host) of the request as its client sent it: the forwarded ones when trusted."""
        scheme, host = request.scheme, request.host
        if self.trust_forwarded:
            proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            if proto in ("http", "https"):
                scheme = proto
            forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
            if FORWARDED_HOST.match(forwarded):
                host = forwarded
        return scheme, host

    def route(self, request: web.Request) -> tuple[str | None, str, str]:
        """(tenant, path the tenant sees, prefix it is mounted at) for a request."""
        if self.domain:
            host = (self.origin(request)[1] or "").split(":", 1)[0].lower()
            suffix = "." + self.domain
            if host.endswith(suffix):
                return host.removesuffix(suffix), request.raw_path, ""
        raw = request.raw_path
        tenant, _, rest = raw[1:].partition("/")
        tenant, query_mark, query = tenant.partition("?")
        if query_mark:  # "/acme?x=1": the tenant's root with a query
            return tenant, "/?" + query, "/" + tenant
        return tenant, "/" + rest, "/" + tenant

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        self.in_flight += 1
        self._running.add(task)
        served = Served()
        token = _served.set(served)
        try:
            if tracing.ENABLED:
                response = await self._traced(request)
            else:
                response = await self._answer(request)
        except asyncio.CancelledError:
            if not self.aborting:
                raise
            task.uncancel()
            response = error(
                503,
                "ShuttingDown",
                "the daemon stopped before the tenant answered (drain_timeout passed); retry",
            )
        finally:
            _served.reset(token)
            self.in_flight -= 1
            self._running.discard(task)
            if self._idle is not None and not self.in_flight:
                self._idle.set()
        if self.observe is not None or self.access_log:
            self._answered(request, response, time.perf_counter() - started, served)
        return response

    async def _traced(self, request: web.Request) -> web.StreamResponse:
        with tracing.request_span(request.method, request.path, request.headers) as span:
            response = await self._answer(request)
            served = _served.get()
            tracing.answered(span, response.status, served.tenant if served else None)
            return response

    def _answered(
        self, request: web.Request, response: web.StreamResponse, took: float, served: Served
    ) -> None:
        kind, tenant = served.error, served.tenant
        if kind == "UnknownTenant":
            tenant = None  # a name that is no tenant: counted in the totals only
        if self.observe is not None:
            self.observe(took, response.status, tenant, kind)
        if self.access_log and access.isEnabledFor(logging.INFO):
            body = response.body if isinstance(response, web.Response) else None
            size = len(body) if isinstance(body, bytes | bytearray) else 0
            ms = round(took * 1000, 3)
            access.info(
                '%s "%s %s" %d %d %.1fms',
                request.remote or "-",
                request.method,
                request.path_qs,
                response.status,
                size,
                ms,
                extra={
                    "tenant_id": tenant,
                    "remote": request.remote,
                    "method": request.method,
                    "path": request.path_qs,
                    "status": response.status,
                    "bytes": size,
                    "duration_ms": ms,
                    **({"error": kind} if kind else {}),
                },
            )

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        tenant, path, prefix = self.route(request)
        if not tenant or not TENANT_ID.match(tenant):
            return error(
                404,
                "UnknownTenant",
                f"{request.path!r} names no tenant: send requests to /<tenant>/<path>",
            )
        served = _served.get()
        if served is not None:
            served.tenant = tenant
        try:
            body = await read_body(request, self.body_timeout)
        except BodyTimeout as exc:
            return error(408, "BodyTimeout", str(exc))
        except web.HTTPRequestEntityTooLarge:
            return error(
                413,
                "BodyTooLarge",
                f"the request body is over the limit of {self.max_body_bytes} bytes "
                "(max_body_bytes in the daemon's config)",
            )
        scheme, host = self.origin(request)
        url = f"{scheme}://{host}{path}"
        headers = CIMultiDict(request.headers)
        headers[PREFIX_HEADER] = prefix  # where the tenant is mounted, for its own links
        return await self._dispatch(tenant, request.method, url, headers, body)

    async def _dispatch(
        self, tenant: str, method: str, url: str, headers: Any, body: bytes
    ) -> web.StreamResponse:
        try:
            # the warm path: a loaded tenant's stub from the loader's cache, no coroutine for it
            stub = self.tenants.loaded(tenant) or await self.tenants.stub(tenant)
            reply = await stub.fetch(url, method=method, headers=headers, body=body)
        except (UnknownTenant, InvalidTenant) as exc:
            return error(404, "UnknownTenant", str(exc), tenant=tenant)
        except CompileError as exc:
            if not self.expose_errors:
                return error(
                    500,
                    "CompileError",
                    f"tenant {tenant!r}'s code does not compile; deploy a fixed version (the "
                    "errors are in the daemon's log and in the answer to the deploy)",
                    tenant=tenant,
                )
            return error(
                500,
                "CompileError",
                f"tenant {tenant!r}'s code does not compile; deploy a fixed version",
                tenant=tenant,
                errors=compile_errors(exc),
            )
        except TenantError as exc:
            if self.tenant_error is not None:
                self.tenant_error(tenant, exc)
            details = {"traceback": exc.traceback} if self.expose_errors else {}
            if exc.type_name == INVALID_HEADER:
                return error(502, INVALID_HEADER, exc.message, tenant=tenant, **details)
            if not self.expose_errors:
                return error(
                    500,
                    "TenantError",
                    f"tenant {tenant!r} raised an uncaught exception; its traceback is in the "
                    "tenant's log (dynworkers logs TENANT)",
                    tenant=tenant,
                )
            answer = error(500, exc.type_name, exc.message, tenant=tenant, **details)
            served = _served.get()
            if served is not None:  # the tenant's own type names are no closed list
                served.error = "TenantError"
            return answer
        except SandboxTimeout as exc:
            return error(504, "DeadlineExceeded", str(exc), tenant=tenant)
        except SandboxCrashed as exc:
            return error(502, "SandboxCrashed", str(exc), tenant=tenant, reason=exc.reason)
        except SandboxError as exc:
            return error(502, type(exc).__name__, str(exc), tenant=tenant)
        except PoolBusy as exc:
            answer = error(503, "Busy", str(exc), tenant=tenant)
            answer.headers["Retry-After"] = "1"
            return answer
        except SupervisorClosed as exc:
            return error(503, "ShuttingDown", str(exc))
        except Exception as exc:  # the host's own fault (a dispatcher module's, say): logged here
            log.exception("tenant %r: request failed in the host", tenant)
            return error(500, "HostError", f"the host failed to serve tenant {tenant!r}: {exc}")
        response = web.Response(status=reply.status, body=reply.body)
        valid = self._valid_names
        for name, value in reply.headers.items():
            lowered = valid.get(name)
            if lowered is None and HEADER_NAME.match(name):
                if len(valid) >= VALID_NAMES_KEPT:
                    valid.clear()
                lowered = valid[name] = name.lower()
            if lowered is None or not HEADER_VALUE.match(value):
                return error(
                    502,
                    INVALID_HEADER,
                    f"tenant {tenant!r} answered with an invalid header {name!r}: {value!r} "
                    "(names are HTTP tokens; values hold no CR, LF, NUL or control character)",
                    tenant=tenant,
                )
            if lowered not in HOP_BY_HOP:
                response.headers[name] = value
        return response

    # --- shutdown --------------------------------------------------------------------------------

    async def drained(self) -> None:
        """Return once no tenant request is running."""
        self._idle = asyncio.Event()
        if self.in_flight:
            await self._idle.wait()

    def abort(self) -> int:
        """Answer 503 to every request still running (their calls are cancelled); how many."""
        self.aborting = True
        for task in self._running:
            task.cancel()
        return len(self._running)
