"""One tenant's code inside its sandbox: its modules, its env, its entrypoints.

Runs inside a sandbox, in its only thread, after the sandbox was specialised for one tenant. It
executes the host-compiled modules (lazily, on import), instantiates an entrypoint per invocation,
and turns what tenant code returns into plain data within the policy's budget, so that no tenant
object ever reaches the host.

Nothing raises out of here to the loop: every failure is an `ErrorInfo` with a kind from the
protocol's closed list and the tenant's own traceback lines (runtime frames are left out).
"""

from __future__ import annotations

import inspect
import marshal
import traceback
import types
from collections.abc import Mapping
from typing import Any

import msgspec

from dynworkers.engine.replay import WorkflowEntrypoint, run_workflow
from dynworkers.engine.tenant_api import WorkflowBinding
from dynworkers.runtime import protocol
from dynworkers.runtime.sandbox import workers
from dynworkers.runtime.sandbox.bridge import BindingStub, Bridge, GrantTransport, make_fetch
from dynworkers.sandbox_policy import aio
from dynworkers.sandbox_policy.namespace import TenantNamespace
from dynworkers.sandbox_policy.policy import Policy

#: Module-level handlers, as Cloudflare's older style (`on_fetch(request, env, ctx)`); `fetch`
#: is this runtime's own earlier name for it.
_MODULE_HANDLERS: dict[str, tuple[str, ...]] = {
    "fetch": ("on_fetch", "fetch"),
    "scheduled": ("on_scheduled", "scheduled"),
}


def _positional_count(target: Any, offered: int) -> int:
    """How many of the `offered` handler arguments `target` takes: `fetch(self)` gets none,
    `on_fetch(request, env)` two, `on_fetch(request, env, ctx)` three (as Cloudflare calls
    them); a handler with `*args` gets them all."""
    function = getattr(target, "__func__", target)
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType) or code.co_flags & inspect.CO_VARARGS:
        return offered
    count = code.co_argcount - (1 if hasattr(target, "__self__") else 0)
    return max(0, min(offered, count))


class TenantFailure(Exception):
    """Carries an ErrorInfo from deep inside an invocation to the loop."""

    def __init__(self, info: protocol.ErrorInfo) -> None:
        self.info = info


#: Caps on what an error report carries, applied here, in the sandbox: a tenant can raise an
#: exception with a 100 MB message or recurse a thousand frames deep, and the report must still
#: fit in a frame and stay readable.
MAX_ERROR_MESSAGE_CHARS = 8192
MAX_TYPE_NAME_CHARS = 200
MAX_TRACEBACK_FRAMES = 50
MAX_LINE_CHARS = 400


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"


def error_info(
    kind: str, exc: BaseException, tenant_sources: Mapping[str, str]
) -> protocol.ErrorInfo:
    """Describe `exc` as data; keep only frames of the tenant's own files, capped.

    `tenant_sources` maps each tenant file name ("settings.py") to its source. Source lines are
    rendered from it, never through `linecache`: linecache resolves a bare file name against
    `sys.path` and the working directory, so it would show a host file of the same name.
    """
    frames = [
        (frame.f_code.co_filename, lineno, frame.f_code.co_name)
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename in tenant_sources
    ]
    lines: list[str] = []
    if len(frames) > MAX_TRACEBACK_FRAMES:
        lines.append(f"  ... {len(frames) - MAX_TRACEBACK_FRAMES} earlier frames not shown")
        frames = frames[-MAX_TRACEBACK_FRAMES:]
    split: dict[str, list[str]] = {}
    for filename, lineno, name in frames:
        lines.append(_cap(f'  File "{filename}", line {lineno}, in {name}', MAX_LINE_CHARS))
        source_lines = split.get(filename)
        if source_lines is None:
            source_lines = split[filename] = tenant_sources[filename].splitlines()
        if lineno is not None and 0 < lineno <= len(source_lines):
            text = source_lines[lineno - 1].strip()
            if text:
                lines.append(f"    {_cap(text, MAX_LINE_CHARS)}")
    try:
        message = _cap(str(exc), MAX_ERROR_MESSAGE_CHARS)
    except Exception:  # a tenant __str__ that raises must not break the report
        message = "<exception message could not be rendered>"
    name = _cap(type(exc).__name__, MAX_TYPE_NAME_CHARS)
    if lines:
        lines.insert(0, "Traceback (most recent call last):")
    lines.append(f"{name}: {message}" if message else name)
    return protocol.ErrorInfo(kind=kind, type_name=name, message=message, traceback=lines)


class Prepared:
    """Everything a sandbox needs before it knows its tenant, built while it is a spare.

    Building the namespace and the API objects touches a few hundred kilobytes of copy-on-write
    memory; doing it here keeps that cost off the cold path.
    """

    def __init__(self, policy: Policy, bridge: Bridge, outbound: list[int]) -> None:
        self.policy = policy
        self.bridge = bridge
        self.outbound = outbound  # filled in at specialisation; read by fetch at call time
        self.tenant: TenantCode | None = None
        console = workers.Console(bridge.log)
        self.api = workers.WorkersModule(console, make_fetch(bridge, outbound))
        self.namespace = TenantNamespace(
            policy,
            import_tenant_module=self._import,
            api_modules={"workers": self.api, "asyncio": aio.asyncio_module()},
            emit_print=lambda text: bridge.log("info", text),
        )

    def _import(self, name: str) -> types.ModuleType | None:
        return self.tenant.import_module(name) if self.tenant is not None else None


class TenantCode:
    def __init__(self, spec: protocol.Specialise, prepared: Prepared) -> None:
        self.tenant_id = spec.tenant_id
        self.policy = prepared.policy
        self.bridge = prepared.bridge
        self.namespace = prepared.namespace
        self.sources = {m.name: m for m in spec.modules}
        self.files = {f"{m.name}.py": m.source for m in spec.modules}
        self.loaded: dict[str, types.ModuleType] = {}
        prepared.outbound[0] = spec.outbound
        prepared.tenant = self
        self.env = workers.Env(self._env_entries(spec.env))
        main = self.import_module(spec.main_module)
        if main is None:
            raise LookupError(f"main module {spec.main_module!r} is not among the modules")
        self.main = main

    def _env_entries(self, entries: list[protocol.EnvEntry]) -> dict[str, object]:
        out: dict[str, object] = {}
        for entry in entries:
            if entry.kind == "data":
                out[entry.name] = protocol.decode_plain(entry.value)
                continue
            stub = BindingStub(self.bridge, entry.name, entry.capability, entry.methods)
            out[entry.name] = WorkflowBinding(stub) if entry.kind == "workflow" else stub
        return out

    def import_module(self, name: str) -> types.ModuleType | None:
        module = self.loaded.get(name)
        if module is not None:
            return module
        spec = self.sources.get(name)
        if spec is None:
            return None
        module = types.ModuleType(name)
        self.loaded[name] = module  # before exec, so that a circular import sees it
        module.__dict__.update(self.namespace.module_globals(name))
        exec(marshal.loads(spec.code), module.__dict__)
        return module

    # --- invocation ------------------------------------------------------------------------------

    def invoke(self, message: protocol.Invoke) -> bytes:
        """Run one call; return msgpack of the plain result or raise TenantFailure."""
        self.bridge.reset_budget()
        args, kwargs = protocol.decode_plain(message.args)
        for grant in message.grants:
            entry = grant.entry
            if entry.kind == "step" and message.method == "run":  # a workflow wake-up
                args[grant.position] = (GrantTransport(self.bridge, entry.capability), entry)
            else:
                args[grant.position] = BindingStub(
                    self.bridge, entry.name, entry.capability, entry.methods
                )
        target = self._target(message)
        if message.method == "run" and isinstance(
            getattr(target, "__self__", None), WorkflowEntrypoint
        ):
            target = self._workflow_run(target.__self__, args)
            args, kwargs = [], {}
        if message.method == "fetch":
            method, url, headers, body = args[0]
            request = workers.Request(url, method=method, headers=headers, body=body)
            args = [request, self.env, self._context(message)]
        elif message.method == "scheduled":
            controller = workers.ScheduledController(args[0] if args else None)
            args = [controller, self.env, self._context(message)]
        if message.method in ("fetch", "scheduled"):
            args = args[: _positional_count(target, len(args))]
        aio.install_io(self.bridge)
        try:
            result = target(*args, **kwargs)
            if aio.is_awaitable(result):  # an `async def` handler: drive it to completion
                result = aio.block_on(result)
        except Exception as exc:
            raise TenantFailure(error_info("tenant", exc, self.files)) from None
        finally:
            self.bridge.end_invocation()
        return self._plain(result, message.method == "fetch")

    def _context(self, message: protocol.Invoke) -> workers.Context:
        return workers.Context(protocol.decode_plain(message.props))

    def _workflow_run(self, entry: WorkflowEntrypoint, args: list[Any]) -> Any:
        """`run(event, step)` of a workflow: replayed against the records the engine granted."""
        if len(args) != 2 or not isinstance(args[1], tuple):
            raise self._missing("a workflow's run() is called by the engine, with a step grant")
        event, (transport, entry_data) = args
        handover = protocol.decode_plain(entry_data.value)
        return lambda: run_workflow(entry, event, transport, handover)

    def _target(self, message: protocol.Invoke) -> Any:
        name = message.entrypoint or "Default"
        cls = getattr(self.main, name, None)
        if isinstance(cls, type):
            if message.method.startswith("_"):
                raise self._missing(f"method {message.method!r} is private to the entrypoint")
            ctx = workers.Context(protocol.decode_plain(message.props))
            try:
                instance = cls(ctx, self.env)
            except Exception as exc:
                raise TenantFailure(error_info("tenant", exc, self.files)) from None
            method = getattr(instance, message.method, None)
            if not callable(method):
                raise self._missing(f"entrypoint {name!r} has no method {message.method!r}")
            return method
        if message.entrypoint is None and message.method in _MODULE_HANDLERS:
            for handler_name in _MODULE_HANDLERS[message.method]:
                handler = getattr(self.main, handler_name, None)
                # the tenant's own function, not one it imported (`from workers import fetch`)
                if (
                    isinstance(handler, types.FunctionType)
                    and handler.__code__.co_filename in self.files
                ):
                    return handler
        raise self._missing(
            f"no entrypoint {name!r} in module {self.main.__name__!r}: define class {name}"
            + (
                f" or a module-level on_{message.method}(...)"
                if message.entrypoint is None and message.method in _MODULE_HANDLERS
                else ""
            )
        )

    def _missing(self, message: str) -> TenantFailure:
        return TenantFailure(
            protocol.ErrorInfo(kind="entrypoint", type_name="LookupError", message=message)
        )

    def _plain(self, result: object, is_fetch: bool) -> bytes:
        if is_fetch and not isinstance(result, workers.Response):
            hint = " (wrap it: Response.json(...))" if isinstance(result, (dict, list)) else ""
            raise TenantFailure(
                protocol.ErrorInfo(
                    kind="result",
                    type_name="TypeError",
                    message=f"fetch() must return a workers.Response, got "
                    f"{type(result).__name__}{hint}",
                )
            )
        try:
            if isinstance(result, workers.Response) and is_fetch:
                headers = result.headers
                if type(headers) is not workers.Headers:
                    headers = workers.Headers(headers)
                data: object = protocol.ResponseData(
                    status=result.status,
                    headers=[(str(k), str(v)) for k, v in headers.pairs()],
                    body=bytes(result.body),
                )
            else:
                data = result
            payload = protocol.encode(data)
        except (TypeError, ValueError, msgspec.EncodeError, RecursionError) as exc:
            raise TenantFailure(
                protocol.ErrorInfo(
                    kind="result",
                    type_name=type(exc).__name__,
                    message=f"the result is not plain data (dict, list, str, bytes, int, float, "
                    f"bool, None): {exc}",
                )
            ) from None
        if len(payload) > self.policy.max_result_bytes:
            raise TenantFailure(
                protocol.ErrorInfo(
                    kind="result",
                    type_name="ValueError",
                    message=f"the result is {len(payload)} bytes, over the policy's "
                    f"max_result_bytes={self.policy.max_result_bytes}",
                )
            )
        return payload


class _NowhereSocket:
    """A socket for the warm-up run: sends go nowhere, nothing is ever received."""

    def send(self, data: bytes, *args: Any, **kwargs: Any) -> None:
        return None


def blank_prepared(policy: Policy) -> Prepared:
    """A `Prepared` whose bridge sends nowhere until a sandbox gives it its socket.

    The zygote builds one before it forks (each sandbox gets its own copy, and only sets
    `bridge.socket`), and throwaway ones for its rehearsal (runtime.sandbox.prewarm)."""
    bridge = Bridge(
        _NowhereSocket(),  # type: ignore[arg-type]
        policy.max_log_bytes,
        protocol.frame_limit(policy.max_result_bytes),
    )
    return Prepared(policy, bridge, [0])


def warm_up(prepared: Prepared, modules: list[protocol.ModuleCode]) -> None:
    """Run the host's warm-up worker twice through `prepared`; never raise.

    A spare warms up through the very `Prepared` its tenant will get, so that the namespace is
    built once, not once for the warm-up and again for the tenant. Whatever the warm-up sends
    goes nowhere, and `prepared` is left as it was: no tenant, no outbound handler, a full log
    budget. The warm-up's modules live in its own `TenantCode`, which is dropped here.
    """
    bridge = prepared.bridge
    socket = bridge.socket
    bridge.socket = _NowhereSocket()  # type: ignore[assignment]
    try:
        spec = protocol.Specialise(
            tenant_id="warm-up", main_module=modules[0].name, modules=modules, env=[]
        )
        code = TenantCode(spec, prepared)
        request = protocol.encode([[["GET", "http://warm-up/", [], b""]], {}])
        for _ in range(2):
            code.invoke(
                protocol.Invoke(request_id=0, entrypoint=None, method="fetch", args=request)
            )
    except Exception:
        pass  # an optimisation only: a spare that could not warm up is still a good spare
    finally:
        bridge.socket = socket
        bridge.reset_budget()
        bridge.end_invocation()
        prepared.tenant = None
        prepared.outbound[0] = 0
