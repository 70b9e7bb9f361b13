"""The pool: LRU capacity, idle and memory eviction, manual eviction and rehydration,
parallelism across tenants, serialisation within one sandbox, spare replenishment (several
sandboxes per tenant: test_tenant_sandboxes.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import Limits
from dynworkers.runtime import PoolBusy, Supervisor
from tests.runtime.support import eventually, evictions, load
from tests.tenants import basic


def test_capacity_evicts_the_least_recently_used_sandbox(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(max_sandboxes=2)) as sup:
            a = await load(sup, "a", basic.CLOCK)
            b = await load(sup, "b", basic.CLOCK)
            c = await load(sup, "c", basic.CLOCK)
            await a.get_entrypoint().ping()
            await b.get_entrypoint().ping()
            await a.get_entrypoint().ping()  # now b is the least recently used
            await c.get_entrypoint().ping()
            assert sup.sandbox_pid("b") is None
            assert sup.sandbox_pid("a") is not None and sup.sandbox_pid("c") is not None
            stats = sup.stats()
            assert stats["pool"]["size"] == 2
            assert stats["evictions"]["capacity"] == 1
            assert await b.get_entrypoint().ping() == "pong"  # b comes back, a goes
            assert sup.sandbox_pid("a") is None
            assert evictions(sup, "capacity") == 2

    asyncio.run(main())


def test_idle_sandbox_is_evicted_after_its_ttl(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(idle_ttl=0.2, sweep_interval=0.05)) as sup:
            stub = await load(sup, "sleepy", basic.CLOCK)
            await stub.get_entrypoint().ping()
            assert sup.sandbox_pid("sleepy") is not None
            await eventually(lambda: evictions(sup, "idle") == 1, what="an idle eviction")
            assert sup.sandbox_pid("sleepy") is None
            assert await stub.get_entrypoint().ping() == "pong"
            assert sup.stats()["rehydrations"] == 1

    asyncio.run(main())


def test_sandbox_over_its_memory_ceiling_is_evicted(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(sweep_interval=0.05)) as sup:
            hog = await load(sup, "hog", basic.HOARDER, limits=Limits(memory_mb=64))
            calm = await load(sup, "calm", basic.HOARDER, limits=Limits(memory_mb=64))
            await calm.get_entrypoint().ping()
            assert await hog.get_entrypoint().hoard(128) == 1
            await eventually(lambda: evictions(sup, "memory") == 1, what="a memory eviction")
            assert sup.sandbox_pid("hog") is None
            assert sup.sandbox_pid("calm") is not None  # under its ceiling: kept
            assert await hog.get_entrypoint().ping() == "pong"  # rehydrated, hoard gone
            assert await calm.get_entrypoint().ping() == "pong"

    asyncio.run(main())


def test_manual_evict_ends_the_sandbox_and_the_next_call_rehydrates(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.CLOCK)
            await stub.get_entrypoint().ping()
            pid = sup.sandbox_pid("acme")
            assert sup.evict("acme") is True
            assert sup.sandbox_pid("acme") is None
            assert sup.evict("acme") is False  # nothing left to evict
            assert await stub.get_entrypoint().ping() == "pong"
            assert sup.sandbox_pid("acme") not in (None, pid)
            stats = sup.stats()
            assert stats["evictions"]["manual"] == 1
            assert stats["rehydrations"] == 1
            assert stats["cold"] == 2

    asyncio.run(main())


def test_different_tenants_run_in_parallel(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            first = await load(sup, "first", basic.CLOCK)
            second = await load(sup, "second", basic.CLOCK)
            await asyncio.gather(first.get_entrypoint().ping(), second.get_entrypoint().ping())
            (start1, end1), (start2, end2) = await asyncio.gather(
                first.get_entrypoint().busy(0.4), second.get_entrypoint().busy(0.4)
            )
            assert start1 < end2 and start2 < end1, "the two calls ran one after the other"

    asyncio.run(main())


def test_with_one_sandbox_per_tenant_its_requests_are_serialised(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(max_sandboxes_per_tenant=1)) as sup:
            stub = await load(sup, "solo", basic.CLOCK)
            spans = await asyncio.gather(*(stub.get_entrypoint().busy(0.05) for _ in range(4)))
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert end <= start, f"calls overlapped: {spans}"
            assert sup.stats()["pool"]["size"] == 1

    asyncio.run(main())


def test_spares_are_replenished_after_a_cold_start(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(spares=1)) as sup:
            await eventually(lambda: sup.stats()["pool"]["spares"] == 1, what="the first spare")
            boots = sup.stats()["boots"]
            for name in ("one", "two", "three"):
                stub = await load(sup, name, basic.CLOCK)
                await stub.get_entrypoint().ping()
                await eventually(
                    lambda: sup.stats()["pool"]["spares"] == 1, what=f"a spare after {name}"
                )
            assert sup.stats()["boots"] >= boots + 3
            assert sup.stats()["pool"]["size"] == 3

    asyncio.run(main())


def test_with_one_sandbox_per_tenant_concurrent_first_calls_share_one_cold_start(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(max_sandboxes_per_tenant=1)) as sup:
            stub = await load(sup, "popular", basic.CLOCK)
            replies = await asyncio.gather(*(stub.get_entrypoint().ping() for _ in range(6)))
            assert replies == ["pong"] * 6
            stats = sup.stats()
            assert stats["cold"] == 1
            assert stats["pool"]["size"] == 1

    asyncio.run(main())


def test_without_spares_a_cold_start_boots_on_demand(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(spares=0)) as sup:
            stub = await load(sup, "lonely", basic.CLOCK)
            assert await stub.get_entrypoint().ping() == "pong"
            assert sup.stats()["pool"]["spares"] == 0

    asyncio.run(main())


def test_pool_at_capacity_with_every_sandbox_busy_raises_pool_busy(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(max_sandboxes=1)) as sup:
            busy = await load(sup, "busy", basic.CLOCK)
            late = await load(sup, "late", basic.CLOCK, limits=Limits(deadline=0.3))
            await busy.get_entrypoint().ping()
            running = asyncio.ensure_future(busy.get_entrypoint().busy(0.8))
            await asyncio.sleep(0.1)
            with pytest.raises(PoolBusy, match="max_sandboxes"):
                await late.get_entrypoint().ping()
            start, end = await running  # the busy tenant was not disturbed
            assert end > start
            assert await late.get_entrypoint().ping() == "pong"  # room once it is released
            assert evictions(sup, "capacity") == 1

    asyncio.run(main())


def test_concurrent_first_calls_of_more_tenants_than_capacity_all_succeed(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(max_sandboxes=2, deadline=1.0)) as sup:
            stubs = [await load(sup, name, basic.CLOCK) for name in ("a", "b", "c")]
            replies = await asyncio.gather(
                *(stub.get_entrypoint().ping() for stub in stubs), return_exceptions=True
            )
            assert replies == ["pong"] * 3
            assert sup.stats()["pool"]["size"] == 2
            assert evictions(sup, "capacity") >= 1

    asyncio.run(main())
