"""Cron triggers: each tick runs once (across schedulers sharing a store), missed ticks once.

Time is mocked (each scheduler's clock); the stores are real SQLite files and a real
PostgreSQL. Ticks are recorded by the `run` callback instead of a tenant's `scheduled`: the
daemon-level tests (test_cloudflare_docs.py) run real tenants."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Callable
from pathlib import Path

import pytest

from dynworkers.runtime.daemon.cron_store import (
    CronStore,
    PostgresCronStore,
    SQLiteCronStore,
)
from dynworkers.runtime.daemon.crons import CronScheduler, previous_tick

#: 2025-01-01 00:00:00 UTC, a Wednesday
T0 = float(calendar.timegm((2025, 1, 1, 0, 0, 0)))
EVERY_5 = "*/5 * * * *"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scheduler(
    store: CronStore, clock: Clock, ran: list[tuple[str, str, int, str]], host: str = "a"
) -> CronScheduler:
    async def run(tenant: str, cron: str, scheduled_ms: int) -> None:
        ran.append((tenant, cron, scheduled_ms, host))

    return CronScheduler(store, lambda: {"acme": [EVERY_5]}, run, host, clock)


async def check(*schedulers: CronScheduler) -> None:
    started = []
    for each in schedulers:
        started += await each.check()
    await asyncio.gather(*started)


def test_previous_tick_includes_a_tick_at_now() -> None:
    assert previous_tick(EVERY_5, T0) == T0
    assert previous_tick(EVERY_5, T0 + 299) == T0
    assert previous_tick("0 2 * * *", T0 + 86400) == T0 + 86400 - 22 * 3600


def run_sqlite(body: Callable[[Callable[[], CronStore]], object], tmp_path: Path) -> None:
    asyncio.run(body(lambda: SQLiteCronStore(tmp_path / "crons.db")))  # type: ignore[arg-type]


async def each_tick_once(make: Callable[[], CronStore]) -> None:
    ran: list[tuple[str, str, int, str]] = []
    clock = Clock(T0 + 10)
    hosts = [scheduler(make(), clock, ran, host) for host in ("a", "b")]
    for each in hosts:
        await each.store.open()
    try:
        await check(*hosts)
        assert ran == []  # a new schedule fires from its next tick, not a past one
        for minute in (5, 6, 10, 14, 15):
            clock.now = T0 + minute * 60
            await check(*hosts)
        assert [(t, c, ms) for t, c, ms, _ in ran] == [
            ("acme", EVERY_5, int((T0 + m * 60) * 1000)) for m in (5, 10, 15)
        ]
        assert len({host for *_, host in ran}) >= 1
    finally:
        for each in hosts:
            await each.store.close()


async def missed_ticks_run_once_at_start(make: Callable[[], CronStore]) -> None:
    ran: list[tuple[str, str, int, str]] = []
    clock = Clock(T0 + 10)
    first = scheduler(make(), clock, ran)
    await first.store.open()
    await check(first)
    clock.now = T0 + 300
    await check(first)
    await first.store.close()  # the daemon stops; three hours pass
    assert len(ran) == 1
    clock.now = T0 + 3 * 3600 + 60
    second = scheduler(make(), clock, ran)
    await second.store.open()
    try:
        await check(second)  # at start: the latest missed tick, once
        await check(second)
        assert [ms for _, _, ms, _ in ran] == [int((T0 + 300) * 1000), int((T0 + 3 * 3600) * 1000)]
        third = scheduler(make(), clock, ran)  # a restart right after: nothing was missed
        await third.store.open()
        await check(third)
        await third.store.close()
        assert len(ran) == 2
    finally:
        await second.store.close()


async def a_schedule_removed_is_dropped(make: Callable[[], CronStore]) -> None:
    ran: list[tuple[str, str, int, str]] = []
    clock = Clock(T0 + 10)
    crons = {"acme": [EVERY_5]}

    async def run(tenant: str, cron: str, scheduled_ms: int) -> None:
        ran.append((tenant, cron, scheduled_ms, "a"))

    each = CronScheduler(make(), lambda: crons, run, "a", clock)
    await each.store.open()
    try:
        await check(each)
        crons.clear()
        clock.now = T0 + 600
        await check(each)
        assert ran == [] and each.next == {}
    finally:
        await each.store.close()


@pytest.mark.parametrize(
    "body", [each_tick_once, missed_ticks_run_once_at_start, a_schedule_removed_is_dropped]
)
def test_sqlite(tmp_path: Path, body: Callable[[Callable[[], CronStore]], object]) -> None:
    run_sqlite(body, tmp_path)


@pytest.mark.parametrize("body", [each_tick_once, missed_ticks_run_once_at_start])
def test_postgresql(postgres_url: str, body: Callable[[Callable[[], CronStore]], object]) -> None:
    asyncio.run(body(lambda: PostgresCronStore(postgres_url)))  # type: ignore[arg-type]


def test_each_tick_is_claimed_by_one_host_of_many(postgres_url: str) -> None:
    """Four hosts race for the same ticks; the primary key lets one through each time."""

    async def body() -> None:
        ran: list[tuple[str, str, int, str]] = []
        clock = Clock(T0 + 10)
        hosts = [scheduler(PostgresCronStore(postgres_url), clock, ran, h) for h in "abcd"]
        for each in hosts:
            await each.store.open()
        try:
            await check(*hosts)
            for minute in range(5, 65, 5):
                clock.now = T0 + minute * 60
                await asyncio.gather(*(each.check() for each in hosts))
                await asyncio.gather(*(task for each in hosts for task in each._running))
            ticks = [ms for _, _, ms, _ in ran]
            assert sorted(ticks) == [int((T0 + m * 60) * 1000) for m in range(5, 65, 5)]
        finally:
            for each in hosts:
                await each.store.close()

    asyncio.run(body())
