"""Many wake-ups at once: created together or falling due together, their claims are batched
(`engine.claims`), and still each instance runs exactly once per wake-up, in wake_at order, and
never after a pause or a terminate. A sleep lets its sandbox go before its write commits
(`StepSession.flush`), and that write's failure or fencing still decides the wake-up.

Host-side workflows (a worker thread of the host, the engine's real step object) on a real
SQLite store, and a real sandbox where the sandbox matters; time is a `ManualClock`. Polling
loops only guard against a hang; the store fault is injected by wrapping `store.record`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dynworkers.engine import Engine, ManualClock, StoreError, WorkflowEntrypoint
from dynworkers.engine.claims import MAX_BATCH
from tests.engine.harness import Harness
from tests.tenants import workflows as programs

#: More than one store call's worth of claims, so a burst is split into several batches.
COUNT = MAX_BATCH + 44
HANG_S = 120.0


class Napper(WorkflowEntrypoint):
    """Sleeps `ms`, then notes that its second wake-up got past the sleep."""

    woke: ClassVar[list[str]] = []

    def run(self, event: Any, step: Any) -> Any:
        step.sleep("nap", event.payload["ms"])
        Napper.woke.append(event.instance_id)
        return event.payload["ms"]


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


def _engine(tmp_path: Path, clock: ManualClock) -> tuple[Engine, list[tuple[str, float]]]:
    """An engine whose scheduler notes each wake-up it begins: (instance id, due)."""
    engine = Engine(store=f"sqlite:///{tmp_path / 'engine.db'}", clock=clock, max_running=64)
    begun: list[tuple[str, float]] = []
    run = engine.scheduler._run

    async def noted(instance_id: str, due: float) -> None:
        begun.append((instance_id, due))
        await run(instance_id, due)

    engine.scheduler._run = noted
    return engine, begun


def test_timers_falling_due_together_each_run_once_in_wake_at_order(tmp_path: Path) -> None:
    clock = ManualClock()
    Napper.woke = []

    async def main() -> None:
        engine, begun = _engine(tmp_path, clock)
        async with engine:
            workflow = engine.register("napper", Napper)
            # created in one burst, each sleeping less than the one before: the wake-up order
            # is the reverse of the creation order
            items = [
                {"id": f"i{n:04d}", "params": {"ms": (COUNT - n) * 1000}} for n in range(COUNT)
            ]
            for start in range(0, COUNT, 100):
                await workflow.create_batch(items[start : start + 100])

            async def all_waiting() -> bool:
                return (await engine.count_instances())["waiting"] == COUNT

            await _until(all_waiting, "every instance hibernates")
            assert engine.stats()["hibernating"] == COUNT
            first = list(begun)
            begun.clear()
            clock.advance(COUNT + 1)  # every timer is due at once

            async def all_complete() -> bool:
                return (await engine.count_instances())["complete"] == COUNT

            await _until(all_complete, "every instance completes")
            assert sorted(i for i, _ in first) == sorted(f"i{n:04d}" for n in range(COUNT))
            assert sorted(Napper.woke) == sorted(i for i, _ in first)  # each once past its sleep
            assert len(begun) == COUNT and len({i for i, _ in begun}) == COUNT
            dues = [due for _, due in begun]
            assert dues == sorted(dues)  # begun in wake_at order
            assert [i for i, _ in begun] == [f"i{n:04d}" for n in reversed(range(COUNT))]
            # the wake-ups begun together were claimed in one store call
            assert engine.claims.claims == 2 * COUNT
            assert engine.claims.largest == engine.scheduler.max_running

    asyncio.run(main())


def test_a_paused_or_terminated_instance_timer_never_runs(tmp_path: Path) -> None:
    clock = ManualClock()
    Napper.woke = []

    async def main() -> None:
        engine, begun = _engine(tmp_path, clock)
        async with engine:
            workflow = engine.register("napper", Napper)
            ids = [(await workflow.create(params={"ms": 5000})).id for _ in range(3)]
            paused, terminated, left = ids

            async def all_waiting() -> bool:
                return (await engine.count_instances())["waiting"] == 3

            await _until(all_waiting, "every instance hibernates")
            await engine.pause(paused)
            await engine.terminate(terminated)
            assert engine.stats()["hibernating"] == 1
            begun.clear()
            clock.advance(10)

            async def left_complete() -> bool:
                return (await engine.status(left))["status"] == "complete"

            await _until(left_complete, "the third instance completes")
            for _ in range(20):  # the others had their chance to run (they must not)
                await asyncio.sleep(0.01)
            assert [i for i, _ in begun] == [left] and Napper.woke == [left]
            assert (await engine.status(paused))["status"] == "paused"
            assert (await engine.status(terminated))["status"] == "terminated"
            await engine.resume(paused)  # its time has passed: it runs now, once
            await _until(lambda: _is(engine, paused, "complete"), "the resumed instance completes")
            assert sorted(Napper.woke) == sorted([left, paused])

    asyncio.run(main())


async def _is(engine: Engine, instance_id: str, status: str) -> bool:
    return (await engine.status(instance_id))["status"] == status


def _gate_sleep_writes(engine: Engine) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold every write that puts an instance to sleep until the returned gate opens; the
    other event is set once one such write is held."""
    gate, held = asyncio.Event(), asyncio.Event()
    record = engine.store.record

    async def gated(step: Any, instance_id: str, **fields: Any) -> None:
        if fields.get("status") == "waiting":
            held.set()
            await gate.wait()
        await record(step, instance_id, **fields)

    engine.store.record = gated  # type: ignore[method-assign]
    return gate, held


def test_a_sleep_lets_its_sandbox_go_before_its_write_commits(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Harness(config(max_sandboxes_per_tenant=1), clock=ManualClock()) as h:
            h.deploy("acme", programs.PIPELINE)
            gate, held = _gate_sleep_writes(h.engine)
            await h.fetch("acme", {"id": "a", "params": {"n": 1, "nap": 1000}})
            await asyncio.wait_for(held.wait(), HANG_S)

            async def sandbox_free() -> bool:
                tenants = h.supervisor.stats()["tenants"]
                return all(t["busy"] == 0 for t in tenants.values())

            await _until(sandbox_free, "the sandbox is free while the sleep's write is held")
            assert (await h.engine.status("acme/a"))["status"] == "running"  # not ended yet
            gate.set()
            await h.wait_for("acme/a", "waiting")
            assert h.engine.stats()["hibernating"] == 1

    asyncio.run(main())


def test_a_deferred_sleep_write_that_fails_runs_the_wake_up_again(tmp_path: Path) -> None:
    clock = ManualClock()
    Napper.woke = []

    async def main() -> None:
        engine, begun = _engine(tmp_path, clock)
        async with engine:
            record, failed = engine.store.record, list[str]()

            async def failing_once(step: Any, instance_id: str, **fields: Any) -> None:
                if fields.get("status") == "waiting" and not failed:
                    failed.append(instance_id)
                    raise StoreError("disk I/O error (injected)")
                await record(step, instance_id, **fields)

            engine.store.record = failing_once  # type: ignore[method-assign]
            workflow = engine.register("napper", Napper)
            instance = await workflow.create(params={"ms": 5000})

            async def backed_off() -> bool:
                return engine.store_failures == 1 and not engine.scheduler.running

            await _until(backed_off, "the failed write is counted and the wake-up ends")
            stored = await engine.record(instance.id)  # nothing was lost: as it was created
            assert stored.status == "queued" and stored.wake_at is None
            clock.advance(1)  # past the backoff: the wake-up runs again and sleeps
            await _until(lambda: _is(engine, instance.id, "waiting"), "it sleeps")
            clock.advance(10)
            await _until(lambda: _is(engine, instance.id, "complete"), "it completes")
            assert Napper.woke == [instance.id] and len(begun) == 3

    asyncio.run(main())


def test_a_terminate_while_a_sleep_write_is_in_flight_wins(tmp_path: Path) -> None:
    clock = ManualClock()
    Napper.woke = []

    async def main() -> None:
        engine, begun = _engine(tmp_path, clock)
        async with engine:
            gate, held = _gate_sleep_writes(engine)
            workflow = engine.register("napper", Napper)
            instance = await workflow.create(params={"ms": 5000})
            await asyncio.wait_for(held.wait(), HANG_S)
            await engine.terminate(instance.id)
            gate.set()  # the sleep's write now finds the generation moved on

            async def ended() -> bool:
                return not engine.scheduler.running

            await _until(ended, "the wake-up ends")
            clock.advance(10)
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert (await instance.status())["status"] == "terminated"
            assert engine.stats()["hibernating"] == 0
            assert Napper.woke == [] and len(begun) == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    "fault",
    [StoreError("database is locked (injected)"), RuntimeError("a backend bug (injected)")],
    ids=["store-error", "any-error"],
)
def test_a_failed_batch_claim_backs_off_each_of_its_wake_ups_and_loses_none(
    tmp_path: Path, fault: Exception
) -> None:
    clock = ManualClock()
    Napper.woke = []

    async def main() -> None:
        engine, begun = _engine(tmp_path, clock)
        async with engine:
            claim_batch, failed = engine.store.claim_batch, list[list[str]]()

            async def failing_once(ids: list[str], host: str, now: float) -> Any:
                if not failed:
                    failed.append(list(ids))
                    raise fault
                return await claim_batch(ids, host, now)

            engine.store.claim_batch = failing_once  # type: ignore[method-assign]
            workflow = engine.register("napper", Napper)
            created = await workflow.create_batch([{"params": {"ms": 5000}} for _ in range(3)])
            ids = sorted(i.id for i in created)

            async def backed_off() -> bool:
                return engine.store_failures == 3 and not engine.scheduler.running

            await _until(backed_off, "each wake-up of the failed batch backs off")
            assert sorted(failed[0]) == ids  # the three were claimed in one call
            clock.advance(1)

            async def all_waiting() -> bool:
                return (await engine.count_instances())["waiting"] == 3

            await _until(all_waiting, "each runs again and sleeps")
            clock.advance(10)

            async def all_complete() -> bool:
                return (await engine.count_instances())["complete"] == 3

            await _until(all_complete, "each completes")
            assert sorted(Napper.woke) == ids and len(begun) == 9

    asyncio.run(main())
