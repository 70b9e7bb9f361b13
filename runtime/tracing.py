"""OpenTelemetry spans for the host, when the `otel` extra (opentelemetry-api) is installed.

Host side: called on the supervisor's event loop (the daemon's front door, `Supervisor.invoke`,
binding calls) and the engine's (wake-ups, step attempts). Never imported by the sandbox.

`ENABLED` is True only when opentelemetry is importable, the standard `OTEL_SDK_DISABLED` is not
"true", and a tracer provider is there to receive spans: one given to `set_tracer_provider`, or
a global provider the application (or `opentelemetry-instrument`) set before the Supervisor
started (`refresh()`, called by `Supervisor.start`). An installed extra with no provider
configured costs nothing. Callers read `tracing.ENABLED` before calling anything else here (the
functions below assume the package is there), so without the extra the hot paths do no new work
but reading that flag, and nothing imports opentelemetry.

    span                      kind      what
    <METHOD> (GET, POST...)   SERVER    a front-door request; continues the caller's traceparent
    dynworkers.invoke         INTERNAL  one call into a tenant's sandbox; dynworkers.start is
                                        "cold" or "warm"
    dynworkers.boot           INTERNAL  a cold start: from needing a sandbox to its being
                                        specialised for the tenant (a child of the invoke)
    dynworkers.binding        INTERNAL  a binding call from tenant code (kv.get, service.<method>,
                                        workflows.create, ...); CLIENT for outbound.fetch
    dynworkers.wake_up        INTERNAL  one wake-up of a workflow instance: the root of a trace
                                        of its own (an instance may live for days)
    dynworkers.step           INTERNAL  one attempt of a `step.do`: its name, attempt, outcome

Every span has `dynworkers.tenant.id` (the worker id, for the supervisor's spans); wake-ups and
step attempts have `dynworkers.instance.id`. The step binding's own calls (begin, complete, ...)
are not binding spans: they are the step attempt's start and end. A step attempt still open
when its wake-up ends (the sandbox died, the instance was terminated) ends as "abandoned".

The tracer comes from the global tracer provider (set by the application, or by
`opentelemetry-instrument` from the OTEL_* variables) unless `set_tracer_provider` gave one to
dynworkers alone. Propagation uses the global propagator (W3C `traceparent` by default): the
front door extracts it from the request; the request the host makes for a tenant's `fetch`
(`OutboundRequest.headers`) gets the current span's, replacing any trace header the tenant wrote
(the host's trace is the one to follow). Failures: an exception raised inside a span is recorded
on it and goes on; nothing here raises of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

AVAILABLE: bool
try:
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed: tracing is off
    AVAILABLE = False
else:
    AVAILABLE = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
#: spans are made (see the module docstring); `refresh()` decides
ENABLED = False

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from dynworkers.runtime.handle import SandboxHandle

TENANT = "dynworkers.tenant.id"
INSTANCE = "dynworkers.instance.id"
#: binding kinds whose calls are not binding spans (the step session's are step attempts)
UNTRACED_BINDINGS = frozenset({"step"})

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
#: the step attempt spans still open in the current wake-up (shared by its binding tasks)
_open_steps: contextvars.ContextVar[list[Span]] = contextvars.ContextVar("dynworkers_steps")


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace dynworkers through `provider`; None: through the global one again."""
    global _provider, _tracer
    _provider, _tracer = provider, None
    refresh()


def refresh() -> bool:
    """Trace when a provider is there: dynworkers' own, or a global one that is not the API's
    default placeholder (a proxy that drops every span until an application sets one)."""
    global ENABLED
    if not AVAILABLE:
        ENABLED = False
    elif _provider is not None:
        ENABLED = True
    else:
        ENABLED = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return ENABLED


def tracer() -> Tracer:
    global _tracer
    if _tracer is None:
        from dynworkers import __version__

        _tracer = trace.get_tracer("dynworkers", __version__, tracer_provider=_provider)
    return _tracer


# --- the front door ------------------------------------------------------------------------------


@contextlib.contextmanager
def request_span(method: str, path: str, headers: Mapping[str, str]) -> Iterator[Span]:
    """A server span for one front-door request, in the trace its `traceparent` names."""
    with tracer().start_as_current_span(
        method,
        context=propagate.extract(headers),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    ) as span:
        yield span


def answered(span: Span, status: int, tenant: str | None) -> None:
    span.set_attribute("http.response.status_code", status)
    if tenant:
        span.set_attribute(TENANT, tenant)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"answered {status}"))


# --- the supervisor ------------------------------------------------------------------------------


class InvokeTrace:
    """One invoke's span and its start (a cold start's boot span begins there too)."""

    __slots__ = ("span", "start")

    def __init__(self, span: Span, start: int) -> None:
        self.span = span
        self.start = start


@contextlib.contextmanager
def invoke_span(tenant: str, entrypoint: str | None, method: str) -> Iterator[InvokeTrace]:
    start = time.time_ns()
    attributes = {TENANT: tenant, "dynworkers.method": method}
    if entrypoint:
        attributes["dynworkers.entrypoint"] = entrypoint
    with tracer().start_as_current_span(
        "dynworkers.invoke", start_time=start, attributes=attributes
    ) as span:
        yield InvokeTrace(span, start)


def acquired(invoke: InvokeTrace, handle: SandboxHandle, cold: bool) -> None:
    """The invoke holds its sandbox: cold or warm; a cold start's boot span; and the context the
    sandbox's binding calls run in for this call (so their spans are the invoke's children)."""
    invoke.span.set_attribute("dynworkers.start", "cold" if cold else "warm")
    specialised = handle.channel.specialised
    if cold:
        boot = tracer().start_span(
            "dynworkers.boot", start_time=invoke.start, attributes={TENANT: handle.tenant_id or ""}
        )
        if specialised is None or specialised.done():
            boot.end()
        else:
            specialised.add_done_callback(lambda future: _booted(boot, future))
    handle.trace_context = contextvars.copy_context()


def _booted(span: Span, future: Any) -> None:
    if future.cancelled() or future.exception() is not None or future.result().error:
        span.set_status(Status(StatusCode.ERROR, "the sandbox did not specialise"))
    span.end()


@contextlib.contextmanager
def binding_span(tenant: str, kind: str, method: str) -> Iterator[None]:
    with tracer().start_as_current_span(
        f"dynworkers.binding {kind}.{method}",
        kind=SpanKind.CLIENT if kind == "outbound" else SpanKind.INTERNAL,
        attributes={TENANT: tenant, "dynworkers.binding": f"{kind}.{method}"},
    ):
        yield


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current span's trace headers in `headers`, replacing any of the same names."""
    fresh: dict[str, str] = {}
    propagate.inject(fresh)
    if not fresh:
        return  # no span is being recorded: the headers stay as the tenant wrote them
    names = {name.lower() for name in fresh}
    for name in [name for name in headers if name.lower() in names]:
        del headers[name]
    headers.update(fresh)


# --- the engine ----------------------------------------------------------------------------------


@contextlib.contextmanager
def wake_up_span(instance_id: str) -> Iterator[None]:
    """A root span for one wake-up; step attempts it leaves open end as "abandoned"."""
    steps: list[Span] = []
    token = _open_steps.set(steps)
    try:
        with tracer().start_as_current_span(
            "dynworkers.wake_up", context=Context(), attributes={INSTANCE: instance_id}
        ):
            try:
                yield
            finally:
                for span in list(steps):
                    end_step(span, "abandoned")
    finally:
        _open_steps.reset(token)


def annotate(**attributes: str) -> None:
    """Add `dynworkers.<name>` attributes to the current span (the wake-up's, say)."""
    span = trace.get_current_span()
    for name, value in attributes.items():
        span.set_attribute(TENANT if name == "tenant" else f"dynworkers.{name}", value)


def start_step(tenant: str | None, instance_id: str, name: str, attempt: int) -> Span:
    span = tracer().start_span(
        "dynworkers.step",
        attributes={
            TENANT: tenant or "",
            INSTANCE: instance_id,
            "dynworkers.step.name": name,
            "dynworkers.step.attempt": attempt,
        },
    )
    steps = _open_steps.get(None)
    if steps is not None:
        steps.append(span)
    return span


def end_step(span: Span, outcome: str) -> None:
    """End a step attempt's span: "complete", "failed", "retry" or "abandoned"."""
    steps = _open_steps.get(None)
    if steps is not None and span in steps:
        steps.remove(span)
    span.set_attribute("dynworkers.step.outcome", outcome)
    if outcome != "complete":
        span.set_status(Status(StatusCode.ERROR, f"the attempt ended: {outcome}"))
    span.end()


# --- logs ----------------------------------------------------------------------------------------


def log_ids() -> dict[str, str]:
    """The current span's trace and span ids, for a log line; empty when there is none."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }
