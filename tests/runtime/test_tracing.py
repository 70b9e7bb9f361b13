"""OpenTelemetry spans, recorded by the SDK's in-memory exporter from real sandboxes, a real engine
and a real daemon: which spans, their parents, their attributes, and the W3C traceparent that
reaches the host's outbound request for a tenant's fetch. Never a duration.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dynworkers.runtime import OutboundRequest, OutboundResponse, Supervisor, tracing
from dynworkers.runtime.daemon.config import DaemonConfig
from dynworkers.runtime.daemon.server import Daemon
from tests.engine.harness import Harness
from tests.runtime.support import load
from tests.tenants import basic
from tests.tenants import workflows as programs

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

SOURCE_ROOT = Path(__file__).resolve().parents[2]
#: a caller's trace: version 00, trace id, parent span id, sampled
INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans of dynworkers' tracer, for this test only (the global provider is left alone)."""
    assert tracing.AVAILABLE
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.set_tracer_provider(None)
        assert tracing.ENABLED is False  # the global provider is the API's placeholder
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def test_invokes_are_cold_or_warm_with_a_boot_and_binding_spans_beneath_them(
    config: Callable[..., Any], spans: InMemorySpanExporter
) -> None:
    seen: list[OutboundRequest] = []

    async def outbound(request: OutboundRequest) -> OutboundResponse:
        seen.append(request)
        return OutboundResponse(status=200, body=b"ok")

    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(
                sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")}, global_outbound=outbound
            )
            entry = stub.get_entrypoint()
            await entry.put("k", 1)  # cold
            await entry.outbound("http://api.example/v1")  # warm

    asyncio.run(main())
    cold, warm = sorted(named(spans, "dynworkers.invoke"), key=lambda s: s.start_time or 0)
    assert cold.attributes is not None and warm.attributes is not None
    assert (cold.attributes["dynworkers.start"], warm.attributes["dynworkers.start"]) == (
        "cold",
        "warm",
    )
    assert cold.attributes["dynworkers.tenant.id"] == "acme"
    assert cold.attributes["dynworkers.method"] == "put"
    (boot,) = named(spans, "dynworkers.boot")
    assert parent_of(boot) == span_id(cold) and boot.start_time == cold.start_time
    (put,) = named(spans, "dynworkers.binding kv.put")
    assert parent_of(put) == span_id(cold)
    (fetch,) = named(spans, "dynworkers.binding outbound.fetch")
    assert parent_of(fetch) == span_id(warm)
    # the host's request for the tenant's fetch carries the fetch span as its parent
    (request,) = seen
    _, trace, parent, _ = request.headers["traceparent"].split("-")
    assert (int(trace, 16), int(parent, 16)) == (trace_id(fetch), span_id(fetch))
    assert request.headers["x-from"] == "tenant"


def test_a_wake_up_is_a_root_span_with_its_invoke_and_each_step_attempt(
    config: Callable[..., Any], spans: InMemorySpanExporter
) -> None:
    async def main() -> None:
        async with Harness(config()) as h:
            h.deploy("acme", programs.PIPELINE)
            h.deploy("flaky", programs.FLAKY)
            await h.fetch("acme", {"id": "one", "params": {"n": 4}})
            await h.wait_for("acme/one", "complete")
            envelope = {"__dispatcherMetadata": {"tenant_id": "flaky"}, "params": {"mode": "fatal"}}
            await h.engine.create(h.workflow.name, [("f", envelope)], tenant="flaky")
            await h.wait_for("flaky/f", "errored")

    asyncio.run(main())
    wake_ups = {
        span.attributes["dynworkers.instance.id"]: span
        for span in named(spans, "dynworkers.wake_up")
        if span.attributes is not None
    }
    assert set(wake_ups) == {"acme/one", "flaky/f"}
    one = wake_ups["acme/one"]
    assert one.parent is None  # a trace of its own, not the request's that created it
    assert one.attributes is not None and one.attributes["dynworkers.tenant.id"] == "acme"
    invokes = [s for s in named(spans, "dynworkers.invoke") if parent_of(s) == span_id(one)]
    assert len(invokes) == 1
    steps = [s for s in named(spans, "dynworkers.step") if trace_id(s) == trace_id(one)]
    attributes = [dict(s.attributes or {}) for s in steps]
    assert [(a["dynworkers.step.name"], a["dynworkers.step.outcome"]) for a in attributes] == [
        ("sum", "complete"),
        ("double", "complete"),
    ]
    assert all(a["dynworkers.instance.id"] == "acme/one" for a in attributes)
    assert all(parent_of(s) == span_id(invokes[0]) for s in steps)
    kv = [s for s in named(spans, "dynworkers.binding kv.get") if trace_id(s) == trace_id(one)]
    assert kv, "the steps' KV calls are in the wake-up's trace"
    (fatal,) = [s for s in named(spans, "dynworkers.step") if s.attributes and
                s.attributes["dynworkers.instance.id"] == "flaky/f"]  # fmt: skip
    assert fatal.attributes is not None and fatal.attributes["dynworkers.step.outcome"] == "failed"
    assert not fatal.status.is_ok


DISPATCHER = """
from dynworkers.loader import WorkerCode
from dynworkers.runtime import OutboundResponse

SEEN = []
SOURCE = '''
from workers import WorkerEntrypoint, Response, fetch

class Default(WorkerEntrypoint):
    def fetch(self, request):
        answer = fetch("http://upstream.example/x", headers={"traceparent": "forged"})
        return Response(answer.text())
'''


async def outbound(request):
    SEEN.append(request)
    return OutboundResponse(status=200, body=b"from upstream")


def load(tenant_id, host):
    return WorkerCode("main", {"main": SOURCE}, env=host.default_env(tenant_id),
                      global_outbound=outbound)
"""


def test_a_front_door_request_continues_the_callers_trace_to_the_tenants_outbound_fetch(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    dispatcher = tmp_path / "dispatcher.py"
    dispatcher.write_text(DISPATCHER)
    config = DaemonConfig(
        state_dir=str(tmp_path / "state"),
        tenants="",
        dispatcher=str(dispatcher),
        port=0,
        control_port=0,
        spares=1,
        max_sandboxes=4,
    )

    async def main() -> tuple[int, bytes, list[Any]]:
        daemon = Daemon(config)
        try:
            await daemon.start()
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    daemon.urls["front"] + "/acme/", headers={"traceparent": INCOMING}
                ) as answer,
            ):
                body = await answer.read()
                assert daemon.tenants.dispatcher is not None
                return answer.status, body, list(daemon.tenants.dispatcher.SEEN)
        finally:
            await daemon.stop()

    status, body, seen = asyncio.run(main())
    assert (status, body) == (200, b"from upstream")
    (server,) = named(spans, "GET")
    assert format(trace_id(server), "032x") == INCOMING.split("-")[1]
    assert format(parent_of(server) or 0, "016x") == INCOMING.split("-")[2]
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["dynworkers.tenant.id"] == "acme"
    (invoke,) = named(spans, "dynworkers.invoke")
    assert parent_of(invoke) == span_id(server)
    (fetch,) = named(spans, "dynworkers.binding outbound.fetch")
    assert parent_of(fetch) == span_id(invoke)
    (request,) = seen
    assert request.headers["traceparent"] == (
        f"00-{INCOMING.split('-')[1]}-{format(span_id(fetch), '016x')}-01"
    )  # the host's trace, not the one the tenant wrote


def test_without_opentelemetry_tracing_is_off_and_nothing_imports_it(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        from dynworkers.runtime import Supervisor, SupervisorConfig, tracing
        from tests.runtime.support import load
        from tests.tenants import basic

        async def main():
            config = SupervisorConfig(state_dir={str(tmp_path / "state")!r}, spares=1)
            async with Supervisor(config) as sup:
                stub = await load(sup, "acme", basic.BINDINGS, env={{"KV": sup.kv("ns")}})
                await stub.get_entrypoint().put("k", 1)
                assert await stub.get_entrypoint().get("k") == 1

        assert tracing.ENABLED is False
        asyncio.run(main())
        loaded = [name for name in sys.modules if name.startswith("opentelemetry.")]
        assert not loaded, loaded
        print("off")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SOURCE_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0 and done.stdout.strip() == "off", done.stderr
