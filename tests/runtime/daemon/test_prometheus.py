"""The daemon's Prometheus metrics, scraped from a real Supervisor and Engine after real tenant
calls and workflows: names, labels and counts (never timings).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from dynworkers.engine import ManualClock
from dynworkers.engine.engine import STATUSES
from dynworkers.runtime.daemon.prometheus import DaemonMetrics, _resident
from dynworkers.runtime.metrics import EVICTION_REASONS
from tests.engine.harness import Harness
from tests.tenants import workflows as programs

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(metrics: DaemonMetrics) -> tuple[dict[str, str], Samples]:
    """({family: type}, {(sample name, labels): value}) of one render."""
    body, content_type = await metrics.render()
    assert content_type.startswith("text/plain")
    types, samples = {}, {}
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """{label value: sample value} of every sample `name`."""
    return {dict(key)[label]: v for (sample, key), v in samples.items() if sample == name}


async def eventually(predicate: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 10.0  # a guard against a hang only
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def create(h: Harness, tenant: str, local: str, params: Any) -> str:
    """Create an instance as the tenant's binding would, and return its engine id."""
    envelope = {"__dispatcherMetadata": {"tenant_id": tenant}, "params": params}
    (created,) = await h.engine.create(h.workflow.name, [(local, envelope)], tenant=tenant)
    return created


def test_metrics_describe_calls_boots_pool_memory_workflows_and_steps(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        # a manual clock: the instance waiting on a retry stays waiting until the scrape
        async with Harness(config(), clock=ManualClock()) as h:
            metrics = DaemonMetrics(h.supervisor, h.engine)
            metrics.start()
            try:
                await exercise(h, metrics)
            finally:
                metrics.close()
            assert metrics._observe_pool not in h.supervisor.metrics.observers
            assert metrics._observe_step not in h.engine.step_observers

    async def exercise(h: Harness, metrics: DaemonMetrics) -> None:
        h.deploy("acme", programs.PIPELINE)
        h.deploy("flaky", programs.FLAKY)
        assert await h.fetch("acme", {"id": "one", "params": {"n": 4}}) == {"id": "one"}  # cold
        assert await h.fetch("acme", {"id": "two", "params": {"n": 5}}) == {"id": "two"}  # warm
        await h.wait_for("acme/one", "complete")
        await h.wait_for("acme/two", "complete")
        await h.wait_for(await create(h, "flaky", "f", {"mode": "fatal"}), "errored")
        await h.wait_for(await create(h, "flaky", "r", {"mode": "flaky"}), "waiting")
        await eventually(lambda: h.engine.stats()["running"] == 0)  # wake-ups have ended
        for seconds, status in ((0.01, 200), (0.02, 201), (0.03, 404), (0.5, 503), (1.0, 999)):
            metrics.observe_dispatch(seconds, status)

        types, samples = await scrape(metrics)
        assert {
            "dynworkers_boot_latency_seconds": "histogram",
            "dynworkers_dispatch_seconds": "histogram",
            "dynworkers_requests": "counter",
            "dynworkers_workflow_step_seconds": "histogram",
            "dynworkers_cold_starts": "counter",
            "dynworkers_warm_starts": "counter",
            "dynworkers_rehydrations": "counter",
            "dynworkers_evictions": "counter",
            "dynworkers_pool_sandboxes": "gauge",
            "dynworkers_pool_capacity": "gauge",
            "dynworkers_pool_spares": "gauge",
            "dynworkers_pool_booting": "gauge",
            "dynworkers_tenant_memory_bytes": "gauge",
            "dynworkers_workflow_instances": "gauge",
            "dynworkers_engine_running": "gauge",
            "dynworkers_engine_ready": "gauge",
            "dynworkers_engine_hibernating": "gauge",
        }.items() <= types.items()

        # boots: two tenants started cold; the second fetch and the wake-ups found acme warm
        stats = h.supervisor.metrics
        boots = labelled(samples, "dynworkers_boot_latency_seconds_count", "start")
        assert boots["cold"] == stats.cold >= 2
        assert 1 <= boots["warm"] <= stats.warm
        assert value(samples, "dynworkers_cold_starts_total") == stats.cold
        assert value(samples, "dynworkers_warm_starts_total") == stats.warm
        assert value(samples, "dynworkers_rehydrations_total") == 0
        le = labelled(
            {k: v for k, v in samples.items() if ("start", "cold") in k[1]},
            "dynworkers_boot_latency_seconds_bucket",
            "le",
        )
        assert le["+Inf"] == boots["cold"] and "0.0001" in le and "10.0" in le

        # evictions: every reason from the start
        assert labelled(samples, "dynworkers_evictions_total", "reason") == dict.fromkeys(
            EVICTION_REASONS, 0.0
        )

        # pool and memory
        assert value(samples, "dynworkers_pool_capacity") == 4
        assert value(samples, "dynworkers_pool_sandboxes") == len(h.supervisor.pool.lru) >= 2
        assert value(samples, "dynworkers_pool_spares") >= 0
        assert value(samples, "dynworkers_pool_booting") >= 0
        memory = labelled(samples, "dynworkers_tenant_memory_bytes", "tenant")
        assert set(memory) == set(h.supervisor.pool.active) >= {"acme@v1", "flaky@v1"}
        assert all(rss > 0 for rss in memory.values())

        # workflows: every status present; two complete, one errored, one waiting on a retry
        instances = labelled(samples, "dynworkers_workflow_instances", "status")
        assert instances == {
            **dict.fromkeys(STATUSES, 0.0),
            "complete": 2.0,
            "errored": 1.0,
            "waiting": 1.0,
        }
        assert value(samples, "dynworkers_engine_hibernating") == 1
        assert value(samples, "dynworkers_engine_running") == 0
        assert value(samples, "dynworkers_engine_ready") == 0
        steps = labelled(samples, "dynworkers_workflow_step_seconds_count", "outcome")
        assert steps == {"complete": 4.0, "failed": 1.0, "retry": 1.0}

        # the front door's requests, by status class
        assert labelled(samples, "dynworkers_requests_total", "code") == {
            "2xx": 2.0,
            "4xx": 1.0,
            "5xx": 1.0,
            "other": 1.0,
        }
        assert labelled(samples, "dynworkers_dispatch_seconds_count", "code")["2xx"] == 2

        # an eviction shows at the next scrape; after close(), the observers are gone
        evicted = len(h.supervisor.sandbox_pids("acme@v1"))  # the fetch's and the wake-ups'
        assert h.supervisor.evict("acme@v1")
        metrics.close()
        await h.fetch("acme", {"id": "three", "params": {"n": 1}})
        _, after = await scrape(metrics)
        assert value(after, "dynworkers_evictions_total", reason="manual") == evicted
        assert value(after, "dynworkers_rehydrations_total") == 1
        assert labelled(after, "dynworkers_boot_latency_seconds_count", "start") == boots

    asyncio.run(main())


def test_each_instance_has_its_own_registry_and_closed_parts_are_left_out(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Harness(config()) as h:
            first = DaemonMetrics(h.supervisor, h.engine)
            second = DaemonMetrics(h.supervisor, h.engine)  # no "duplicated timeseries"
            first.start()
            second.start()
            h.deploy("acme", programs.PIPELINE)
            await h.fetch("acme", {"id": "one", "params": {"n": 1}})
            first.observe_dispatch(0.01, 200)
            _, one = await scrape(first)
            _, two = await scrape(second)
            assert value(one, "dynworkers_requests_total", code="2xx") == 1
            assert value(two, "dynworkers_requests_total", code="2xx") == 0
            cold = ("dynworkers_boot_latency_seconds_count", frozenset({("start", "cold")}))
            assert one[cold] == two[cold] >= 1
            first.close()
            second.close()
        # the engine and the supervisor are closed: what they kept is still shown, the rest not
        types, samples = await scrape(first)
        assert "dynworkers_workflow_instances" not in types
        assert "dynworkers_pool_sandboxes" not in types
        assert value(samples, "dynworkers_evictions_total", reason="shutdown") >= 1
        assert value(samples, "dynworkers_cold_starts_total") >= 1

    asyncio.run(main())


def test_a_sandbox_that_exited_is_left_out_of_memory_not_an_error() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    here = subprocess.Popen(["sleep", "30"])
    try:
        found = dict(_resident([("gone", gone.pid), ("here", here.pid)]))
    finally:
        here.kill()
        here.wait()
    assert set(found) == {"here"} and found["here"] > 0
