"""The supervisor's life: calls in flight when it closes or evicts, calls after close, stats."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.runtime import SandboxCrashed, Supervisor, SupervisorClosed, SupervisorConfig
from dynworkers.sandbox_policy import PolicyError
from tests.runtime.support import load
from tests.tenants import basic


def test_call_in_flight_at_close_fails_with_supervisor_closed(config: Callable[..., Any]) -> None:
    async def main() -> None:
        sup = Supervisor(config())
        await sup.start()
        try:
            stub = await load(sup, "acme", basic.CLOCK)
            await stub.get_entrypoint().ping()
            running = asyncio.ensure_future(stub.get_entrypoint().busy(3.0))
            await asyncio.sleep(0.2)
        finally:
            await sup.close()
        with pytest.raises(SupervisorClosed):
            await running
        with pytest.raises(SupervisorClosed):
            await stub.get_entrypoint().ping()
        await sup.close()  # closing twice is harmless

    asyncio.run(main())


def test_manual_evict_during_a_call_fails_that_call(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.CLOCK)
            await stub.get_entrypoint().ping()
            running = asyncio.ensure_future(stub.get_entrypoint().busy(3.0))
            await asyncio.sleep(0.2)
            assert sup.evict("acme")
            with pytest.raises(SandboxCrashed, match="manual"):
                await running
            assert await stub.get_entrypoint().ping() == "pong"

    asyncio.run(main())


def test_bindings_and_stats_need_a_running_supervisor(config: Callable[..., Any]) -> None:
    sup = Supervisor(config())
    with pytest.raises(SupervisorClosed):
        sup.kv("ns")
    with pytest.raises(SupervisorClosed):
        sup.stats()


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_sandboxes": 0},
        {"max_sandboxes_per_tenant": 0},
        {"spares": -1},
        {"deadline": 0},
        {"idle_ttl": -1},
        {"sweep_interval": 0},
    ],
)
def test_invalid_supervisor_config_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        SupervisorConfig(**overrides)


def test_stats_report_pool_latency_hardening_and_loader(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.CLOCK)
            await stub.get_entrypoint().ping()
            stats = sup.stats()
            assert stats["pool"]["size"] == 1 and stats["pool"]["max_sandboxes"] == 4
            assert stats["tenants"] == {"acme": {"sandboxes": 1, "busy": 0, "queued": 0}}
            assert set(stats["boot_latency_ms"]) == {"p50", "p90", "p99"}
            assert 0 < stats["boot_latency_ms"]["p50"] <= stats["boot_latency_ms"]["p99"]
            assert {"capacity", "idle", "memory", "deadline", "crash", "protocol", "manual"} <= set(
                stats["evictions"]
            )
            assert "rlimits" in stats["hardening"]["active"]
            assert isinstance(stats["hardening"]["unavailable"], list)
            assert stats["loader"]["workers"] == 1
            assert stats["loader"]["compile_cache"]["misses"] == 1

    asyncio.run(main())


def test_ready_returns_once_the_spares_have_booted_and_a_cold_start_takes_one(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(spares=2)) as sup:
            await sup.ready()
            assert sup.stats()["pool"]["spares"] == 2
            stub = await load(sup, "acme", basic.GREETER)
            assert await stub.get_entrypoint("Greeter").ping() == "pong"
            assert sup.stats()["cold"] == 1  # specialised from a spare, not a fork of its own

    asyncio.run(main())
