"""The control API: JSON under /_/, plus /healthz and /metrics, on a listener of its own.

Host side, an aiohttp application on the daemon's event loop, bound to `control_host:control_port`
(never the tenant front door's listener, so a tenant request cannot reach it). With a
`control_token` configured every route but /healthz needs `Authorization: Bearer <token>`.

    GET  /healthz                                         liveness: the process answers
    GET  /readyz                                          readiness: running, and the state
                                                          directory (the store's disk) takes writes
    GET  /metrics                                         Prometheus text format
    GET  /_/stats                                         pool, loader and engine stats
    GET  /_/tenants                                       tenants and their served versions
    PUT  /_/tenants/{t}            {"modules": {...}, "main_module"?}    deploy (compile first)
    GET  /_/tenants/{t}                                   the tenant's deployment history
    DELETE /_/tenants/{t}                                 stop serving it (its KV, instances and
                                                          versions stay)
    GET  /_/tenants/{t}/logs?tail=N&follow=0|1            its log lines (server-sent events);
                                                          follow=0 by default; Last-Event-ID
                                                          resumes after that line
    GET  /_/tenants/{t}/workflows?status=&limit=          its workflow instances
    POST /_/tenants/{t}/workflows  {"id"?, "params"?}     create an instance
    GET  /_/tenants/{t}/workflows/{id}                    status
    GET  /_/tenants/{t}/instances/{id}/history            steps, attempts and timeline
    POST /_/tenants/{t}/workflows/{id}/events  {"type", "payload"?}
    POST /_/tenants/{t}/workflows/{id}/{pause,resume,terminate,restart}  (restart: {"from_step"?})
    GET  /_/ui, /_/hot-paths                              the dashboard (`runtime.daemon.dashboard`:
                                                          its files need no token, its data does)

Workflow operations go through the tenant's own `env.WORKFLOWS` binding, so the API sees exactly
the instances the tenant sees, by the ids the tenant knows. Bad input is 400 naming the problem, an
unknown tenant or instance 404, an operation the instance's status refuses 409, code that does not
compile 422 with every error (the served version stays), and so does a module whose name or source
is not valid Unicode (a lone surrogate), or that imports a module the policy does not offer.
Creating an instance for a tenant whose current code has no `TenantWorkflow` is 422
`NoWorkflowClass`; listing instances with a status that does not exist is 400. JSON nested deeper
than `MAX_DEPTH` is 400. A body not sent within `body_timeout` is 408. A store or disk that fails a
write (full, read-only, I/O error) is 503 `StoreUnavailable` with the reason, and /readyz says so
until writes succeed again; nothing is half-done: the store commits all of an operation or none of
it. Any other failure is the host's: one ERROR line with its traceback in the daemon's log, and a
500 `HostError`.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dynworkers.engine import (
    EngineClosed,
    InstanceExists,
    InstanceNotFound,
    InvalidInput,
    InvalidTransition,
    StoreError,
    wrap_workflow_binding,
)
from dynworkers.engine.engine import STATUSES  # not in engine's surface; engine/ is not ours
from dynworkers.loader import CompileError, InvalidWorkerCode
from dynworkers.runtime.daemon.connections import BodyTimeout, read_body
from dynworkers.runtime.daemon.dashboard import Dashboard, add_memory, is_public
from dynworkers.runtime.daemon.deployments import InvalidTenant, check_tenant_id
from dynworkers.runtime.daemon.front import compile_errors, error
from dynworkers.runtime.daemon.logs import last_event_id
from dynworkers.runtime.daemon.tenants import DeployRefused, NoWorkflowClass, UnknownTenant
from dynworkers.runtime.state_dir import probe

if TYPE_CHECKING:
    from dynworkers.runtime.daemon.server import Daemon

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPERATIONS = ("pause", "resume", "terminate", "restart")
MAX_LIST = 1000
#: nesting of arrays and objects a JSON body may have
MAX_DEPTH = 100
#: errno values that mean "the disk does not take writes", answered 503
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
log = logging.getLogger("dynworkers.control")


class BadRequest(Exception):
    """The request's body or query cannot be used; the message says what is wrong."""


_TOO_DEEP = object()


def _too_deep(value: Any, most: int) -> bool:
    """Whether arrays and objects nest more than `most` levels (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            if depth > most:
                return True
            stack.extend((child, depth + 1) for child in children)
    return False


async def json_body(
    request: web.Request, required: bool = True, body_timeout: float = 30.0
) -> dict[str, Any]:
    raw = await read_body(request, body_timeout)
    if not raw.strip():
        if required:
            raise BadRequest("the request needs a JSON object body")
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # nested past the interpreter's recursion limit
        value = _TOO_DEEP
    if value is _TOO_DEEP or _too_deep(value, MAX_DEPTH):
        raise BadRequest(
            f"the body nests arrays and objects more than {MAX_DEPTH} levels deep; flatten it"
        )
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(value).__name__}")
    return value


def _int_query(request: web.Request, name: str, default: int, most: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name}={raw!r} must be an integer") from None
    if not 0 <= value <= most:
        raise BadRequest(f"query parameter {name} must be within 0..{most}, got {value}")
    return value


def _check_unicode(tenant: str, modules: dict[str, str]) -> None:
    """CompileError (422) naming each module whose name or source cannot be stored as UTF-8."""
    problems: list[tuple[str, int | None, str]] = []
    for name, source in modules.items():
        shown = name.encode("utf-8", "backslashreplace").decode()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            problems.append((shown, None, f"the module name is not valid Unicode: {exc.reason}"))
            continue
        try:
            source.encode("utf-8")
        except UnicodeEncodeError as exc:
            line = source.count("\n", 0, exc.start) + 1
            problems.append((shown, line, f"the source is not valid Unicode: {exc.reason}"))
    if problems:
        raise CompileError(tenant, problems)


class ControlAPI:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def _body(self, request: web.Request, required: bool = True) -> dict[str, Any]:
        return await json_body(request, required, self.daemon.config.body_timeout)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=max(self.daemon.config.max_body_bytes, 8 << 20),
            middlewares=[self._guard],
        )
        add = app.router.add_route
        add("GET", "/healthz", self.healthz)
        add("GET", "/readyz", self.readyz)
        add("GET", "/metrics", self.metrics)
        add("GET", "/_/stats", self.stats)
        add("GET", "/_/tenants", self.list_tenants)
        add("PUT", "/_/tenants/{tenant}", self.put_tenant)
        add("GET", "/_/tenants/{tenant}", self.tenant_history)
        add("DELETE", "/_/tenants/{tenant}", self.delete_tenant)
        add("GET", "/_/tenants/{tenant}/logs", self.logs)
        add("GET", "/_/tenants/{tenant}/workflows", self.list_instances)
        add("POST", "/_/tenants/{tenant}/workflows", self.create_instance)
        add("GET", "/_/tenants/{tenant}/workflows/{id}", self.instance_status)
        add("GET", "/_/tenants/{tenant}/instances/{id}/history", self.instance_history)
        add("GET", "/_/tenants/{tenant}/workflows/{id}/history", self.instance_history)
        add("POST", "/_/tenants/{tenant}/workflows/{id}/events", self.send_event)
        add("POST", "/_/tenants/{tenant}/workflows/{id}/{operation}", self.operate)
        Dashboard(self.daemon).add_routes(app)
        return app

    # --- errors and the token --------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.daemon.config.control_token
        if token and request.path not in ("/healthz", "/readyz") and not is_public(request):
            given = request.headers.get("Authorization", "")
            if not given:
                return error(
                    401,
                    "Unauthorized",
                    "this daemon needs its control token: send Authorization: Bearer <token>",
                )
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(
                    401,
                    "Unauthorized",
                    "the control token sent was refused: send Authorization: Bearer <token> "
                    "with the daemon's control_token",
                )
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                return error(413, "BodyTooLarge", "the request body is over the control API limit")
            if exc.status in (404, 405):
                return error(
                    exc.status,
                    exc.reason.replace(" ", ""),
                    f"no route {request.method} {request.path}",
                )
            raise
        except (BadRequest, InvalidInput, InvalidWorkerCode) as exc:
            return error(400, "BadRequest", str(exc))
        except (InvalidTenant, UnknownTenant) as exc:
            return error(404, "UnknownTenant", str(exc))
        except InstanceNotFound as exc:
            return error(404, "InstanceNotFound", str(exc))
        except (InvalidTransition, InstanceExists, DeployRefused) as exc:
            return error(409, type(exc).__name__, str(exc))
        except NoWorkflowClass as exc:
            return error(422, "NoWorkflowClass", str(exc))
        except CompileError as exc:
            served = self.daemon.tenants.served(request.match_info.get("tenant", ""))
            return error(
                422,
                "CompileError",
                "the code did not compile; "
                + (
                    f"version {served} keeps serving"
                    if served
                    else "nothing was deployed (the tenant had no working version)"
                ),
                errors=compile_errors(exc),
            )
        except EngineClosed as exc:
            return error(503, "ShuttingDown", str(exc))
        except BodyTimeout as exc:
            return error(408, "BodyTimeout", str(exc))
        except StoreError as exc:
            return error(
                503,
                "StoreUnavailable",
                f"the workflow store refused the write ({exc}); nothing was changed: free "
                "space or fix the disk, then retry (GET /readyz says when it takes writes)",
            )
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:
                return self._host_error(request)
            return error(
                503,
                "StoreUnavailable",
                f"the state directory refused a write ({exc.strerror}); nothing was deployed: "
                "free space or fix the disk, then retry (GET /readyz says when it takes writes)",
            )
        except Exception:
            return self._host_error(request)

    @staticmethod
    def _host_error(request: web.Request) -> web.Response:
        log.exception("%s %s failed in the host", request.method, request.path)
        return error(500, "HostError", "the daemon failed on this request; see its log")

    # --- daemon ----------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        state = "draining" if self.daemon.stopping else "ok"
        return web.json_response({"status": state}, status=503 if self.daemon.stopping else 200)

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when the daemon takes work: running, its state directory takes writes, and so
        does its workflow store (SQLite file or PostgreSQL)."""
        if self.daemon.stopping:
            return web.json_response({"status": "draining"}, status=503)
        try:
            await asyncio.to_thread(probe, Path(self.daemon.config.state_dir))
        except OSError as exc:
            return web.json_response(
                {
                    "status": "not ready",
                    "store": f"not writable: {exc.strerror or exc}",
                    "message": "the state directory refuses writes: workflow and deploy "
                    "requests answer 503 until it takes them again",
                },
                status=503,
            )
        engine = self.daemon.engine
        try:  # a real, durable write through the store: this host's lease
            await engine.store.renew_host(engine.host, engine.clock.now() + engine.lease.lease)
        except StoreError as exc:
            return web.json_response(
                {
                    "status": "not ready",
                    "store": f"not writable: {exc}",
                    "message": "the workflow store refuses writes: workflow and deploy requests "
                    "answer 503 until it takes them again",
                },
                status=503,
            )
        return web.json_response({"status": "ready", "store": "writable"})

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = await self.daemon.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def stats(self, request: web.Request) -> web.Response:
        stats = self.daemon.supervisor.stats()
        add_memory(stats, self.daemon.supervisor)
        stats["daemon"] = {
            "in_flight": self.daemon.front.in_flight,
            "tenants": len(self.daemon.tenants.deployments.current),
        }
        engine = self.daemon.engine
        now = engine.clock.now()
        try:
            hosts = [
                {
                    "id": h.id,
                    "address": h.address,
                    "started": h.started,
                    "lease_until": h.lease_until,
                    "live": h.lease_until >= now,
                }
                for h in await engine.store.hosts()
            ]
        except StoreError as exc:  # the store is down: the rest of the stats still answer
            hosts = [{"error": str(exc)}]
        stats["cluster"] = {"host": engine.host, "hosts": hosts}
        return web.json_response(stats)

    # --- tenants ---------------------------------------------------------------------------------

    async def list_tenants(self, request: web.Request) -> web.Response:
        return web.json_response({"tenants": self.daemon.tenants.list()})

    async def put_tenant(self, request: web.Request) -> web.Response:
        tenant = check_tenant_id(request.match_info["tenant"])
        body = await self._body(request)
        modules = body.get("modules")
        if not isinstance(modules, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in modules.items()
        ):
            raise BadRequest('"modules" must map module names to source text')
        _check_unicode(tenant, modules)
        unknown = set(body) - {"modules", "main_module"}
        if unknown:
            raise BadRequest(f"unknown field(s) {sorted(unknown)}: send modules and main_module")
        main_module = body.get("main_module")
        if main_module is not None and not isinstance(main_module, str):
            raise BadRequest('"main_module" must be a module name')
        try:
            version, changed = await self.daemon.tenants.deploy(tenant, modules, main_module)
        except InvalidTenant as exc:
            raise BadRequest(str(exc)) from None
        status = 201 if changed else 200
        return web.json_response(
            {"tenant": tenant, "changed": changed, **version.describe()}, status=status
        )

    async def delete_tenant(self, request: web.Request) -> web.Response:
        tenant = self._known(request)
        version = await self.daemon.tenants.delete(tenant)
        return web.json_response({"tenant": tenant, "deleted": True, "version": version})

    async def tenant_history(self, request: web.Request) -> web.Response:
        tenant = self._known(request)
        current = self.daemon.tenants.deployments.current.get(tenant)
        return web.json_response(
            {
                "tenant": tenant,
                "current": current.version if current is not None else None,
                "deployments": await self.daemon.tenants.history(tenant),
            }
        )

    async def logs(self, request: web.Request) -> web.StreamResponse:
        tenant = self._known(request)
        tail = _int_query(request, "tail", 100, 10_000)
        # the backlog, then the end; follow=1 (as `dynworkers logs --follow`): live lines too
        follow = request.query.get("follow", "0").lower() in ("1", "true", "yes")
        try:
            after = last_event_id(request)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return await self.daemon.logs.stream(request, tenant, tail, follow=follow, after=after)

    def _known(self, request: web.Request) -> str:
        tenant = check_tenant_id(request.match_info["tenant"])
        if tenant not in self.daemon.tenants.deployments.current and (
            self.daemon.tenants.dispatcher is None
        ):
            raise UnknownTenant(f"no tenant {tenant!r} is deployed")
        return tenant

    # --- workflows -------------------------------------------------------------------------------

    async def _call(self, tenant: str, method: str, *args: Any) -> Any:
        binding = wrap_workflow_binding({"tenant_id": tenant}, engine=self.daemon.engine)
        return await binding.call(tenant, method, list(args), {})

    async def list_instances(self, request: web.Request) -> web.Response:
        tenant = self._known(request)
        status = request.query.get("status") or None
        if status is not None and status not in STATUSES:
            raise BadRequest(f"no instance status {status!r}: use one of {', '.join(STATUSES)}")
        limit = _int_query(request, "limit", 100, MAX_LIST)
        records = await self.daemon.engine.store.list_instances(
            tenant=tenant, status=status, limit=limit
        )
        prefix = f"{tenant}/"
        return web.json_response(
            {
                "tenant": tenant,
                "instances": [
                    {
                        "id": record.id.removeprefix(prefix),
                        "status": record.status,
                        "created": record.created,
                        "updated": record.updated,
                        "wake_at": record.wake_at,
                        "waiting_for": record.waiting_for,
                    }
                    for record in records
                ],
            }
        )

    async def create_instance(self, request: web.Request) -> web.Response:
        tenant = self._known(request)
        body = await self._body(request, required=False)
        unknown = set(body) - {"id", "params"}
        if unknown:
            raise BadRequest(f"unknown field(s) {sorted(unknown)}: send id and params")
        self.daemon.tenants.check_workflow_class(tenant)
        instance_id = await self._call(tenant, "create", body.get("id"), body.get("params"))
        return web.json_response({"tenant": tenant, "id": instance_id}, status=201)

    async def instance_status(self, request: web.Request) -> web.Response:
        tenant = self._known(request)
        instance_id = request.match_info["id"]
        status = await self._call(tenant, "status", instance_id)
        return web.json_response({"tenant": tenant, "id": instance_id, **status})

    async def instance_history(self, request: web.Request) -> web.Response:
        tenant = self._known(request)
        instance_id = request.match_info["id"]
        view = await self._call(tenant, "history", instance_id)
        return web.json_response({"tenant": tenant, **view})

    async def send_event(self, request: web.Request) -> web.Response:
        tenant = self._known(request)
        instance_id = request.match_info["id"]
        body = await self._body(request)
        event_type = body.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise BadRequest('an event needs "type", a non-empty string')
        await self._call(tenant, "send_event", instance_id, event_type, body.get("payload"))
        return web.json_response({"tenant": tenant, "id": instance_id, "sent": event_type})

    async def operate(self, request: web.Request) -> web.Response:
        tenant = self._known(request)
        instance_id, operation = request.match_info["id"], request.match_info["operation"]
        if operation not in OPERATIONS:
            return error(
                404, "NotFound", f"no operation {operation!r}: use {', '.join(OPERATIONS)}"
            )
        body = await self._body(request, required=False)
        if operation == "restart" and body.get("from_step") is not None:
            await self._call(tenant, operation, instance_id, body["from_step"])
        else:
            await self._call(tenant, operation, instance_id)
        status = await self._call(tenant, "status", instance_id)
        return web.json_response({"tenant": tenant, "id": instance_id, **status})
