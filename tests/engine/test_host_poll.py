"""The safety-net poll (`engine.hosts.HostLease`): a dead host's backlog of orphans drains at the
pace this host's wake-ups finish, not one batch per poll interval.

A real store (each backend of the store contract), the real `Scheduler`, and a wake-up that
claims its instance and completes it. The poll interval is a minute, far past the test's hang
guard: only the backlog rule can drain twenty orphans through four slots in time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from dynworkers.engine import Store
from dynworkers.engine.hosts import HostLease
from dynworkers.engine.scheduler import ManualClock, Scheduler
from tests.engine.test_store_contract import backend, pytest_generate_tests, run_with_store
from tests.engine.test_store_contract import record as instance

__all__ = ["backend", "pytest_generate_tests"]  # the contract's backends, one run each

ORPHANS = 20
SLOTS = 4
#: seconds the drain may take before the test calls it stuck: a hang guard, not a figure
HANG_GUARD_S = 30.0


def test_a_dead_host_s_backlog_drains_without_waiting_a_poll_interval_per_batch(
    tmp_path: Path,
) -> None:
    async def body(store: Store) -> None:
        clock = ManualClock(start=1_000.0)
        await store.register_host("dead", "", 1.0, 10.0)  # its lease lapsed long ago
        await store.create_instances(
            [instance(f"o{n}", owner="dead", created=float(n)) for n in range(ORPHANS)]
        )
        ran: list[str] = []

        async def wake_up(instance_id: str, due: float) -> None:
            record, claimed = await store.claim(instance_id, "me", clock.now())
            assert claimed, instance_id
            await store.record(
                None, instance_id, generation=record.generation, status="complete", owner=None
            )
            ran.append(instance_id)

        scheduler = Scheduler(wake_up, clock, max_running=SLOTS)
        scheduler.start()
        lease = HostLease(store, scheduler, clock, "me", lease=600.0, poll_interval=60.0)
        await lease.start()
        try:
            async with asyncio.timeout(HANG_GUARD_S):
                while len(ran) < ORPHANS:
                    await asyncio.sleep(0.01)
        finally:
            await lease.close()
            await scheduler.close()
        assert sorted(ran) == sorted(f"o{n}" for n in range(ORPHANS))  # each exactly once
        assert lease.taken_over == ORPHANS
        assert await store.claimable("me", clock.now(), 100) == []

    run_with_store(tmp_path, body)


def test_nothing_to_take_over_leaves_the_poll_at_its_interval(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        clock = ManualClock(start=1_000.0)

        async def wake_up(instance_id: str, due: float) -> None:
            raise AssertionError(f"nothing should run, {instance_id} did")

        scheduler = Scheduler(wake_up, clock, max_running=SLOTS)
        scheduler.start()
        lease = HostLease(store, scheduler, clock, "me", lease=600.0, poll_interval=60.0)
        await lease.start()
        try:
            await asyncio.sleep(0.2)
            assert lease.backlog is False
        finally:
            await lease.close()
            await scheduler.close()

    run_with_store(tmp_path, body)
