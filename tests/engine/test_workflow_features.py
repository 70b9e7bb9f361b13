"""Cloudflare's workflow features, end to end in real sandboxes: the step context, a retry delay
given as a function, rollbacks (saga), a DAG of step functions, child workflows, retention.

Time is a `ManualClock` where a delay or a sleep matters; runs are counted in the tenant's KV.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.engine import InstanceNotFound, ManualClock
from tests.engine.harness import Harness
from tests.tenants import workflows as programs

Run = Callable[..., Any]


@pytest.fixture
def run(config: Callable[..., Any]) -> Run:
    def go(test: Callable[[Harness], Any], **options: Any) -> None:
        async def main() -> None:
            async with Harness(config(), **options) as harness:
                harness.deploy("acme", programs.FEATURES)
                await test(harness)

        asyncio.run(main())

    return go


async def start(h: Harness, instance: str, **payload: Any) -> str:
    envelope = {"__dispatcherMetadata": {"tenant_id": "acme"}, "params": payload}
    (created,) = await h.engine.create("dynamic-workflow", [(instance, envelope)])
    return created


async def advance_until(h: Harness, clock: ManualClock, instance: str, *statuses: str) -> Any:
    for _ in range(200):
        status = await h.engine.status(instance)
        if status["status"] in statuses:
            return status
        if status["status"] == "waiting":
            clock.advance(60)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{instance} stayed {status}")


def test_a_step_body_sees_its_attempt_name_count_and_config_and_the_delay_function(
    run: Run,
) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        instance = await start(h, "ctx", mode="context")
        await h.wait_for(instance, "waiting")
        (pending,) = await h.engine.store.steps(instance)
        assert pending.wake_at == clock.now() + 1.0  # the delay function: attempt 1 -> 1,000 ms
        clock.advance(1)
        await h.wait_for(instance, "waiting")
        (pending,) = await h.engine.store.steps(instance)
        assert pending.wake_at == clock.now() + 2.0  # attempt 2 -> 2,000 ms
        clock.advance(2)
        status = await h.wait_for(instance, "complete", "errored")
        assert status["output"] == {"attempts": 3, "second_count": 2, "id": "ctx"}
        assert h.kv("acme", "log") == [[n, "flaky", 1, 600_000] for n in (1, 2, 3)]

    run(test, clock=clock)


def test_a_failed_instance_rolls_back_its_steps_newest_first_retrying_a_failed_rollback(
    run: Run,
) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        instance = await start(h, "saga", mode="saga")
        status = await advance_until(h, clock, instance, "errored")
        assert status["error"] == {"name": "NonRetryableError", "message": "card declined"}
        assert h.kv("acme", "log") == ["undo c C", "undo b B", "undo a A"]
        assert h.kv("acme", "undo-tries:b") == 2  # failed once, retried durably
        assert [h.kv("acme", f"runs:{n}") for n in "abc"] == [1, 1, 1]
        names = [s.name for s in await h.engine.store.steps(instance) if s.status == "complete"]
        assert names[-3:] == ["rollback c", "rollback b", "rollback a"]

    run(test, clock=clock)


def test_terminate_with_rollback_undoes_the_recorded_steps_then_ends_terminated(
    run: Run,
) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        instance = await start(h, "t", mode="saga-terminate")
        await h.wait_for(instance, "waiting")
        await h.engine.terminate(instance, rollback=True)
        await advance_until(h, clock, instance, "terminated")
        assert h.kv("acme", "log") == ["undo c C", "undo b B", "undo a A"]
        assert h.kv("acme", "runs:charge") is None  # replay stopped at the first unrecorded step

    run(test, clock=clock)


def test_a_dag_runs_each_dependency_once_and_passes_their_results(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        instance = await start(h, "dag", mode="dag")
        await h.wait_for(instance, "waiting")
        clock.advance(1)
        status = await h.wait_for(instance, "complete", "errored")
        assert status["output"] == {"c": 6, "a_again": 2}
        assert [h.kv("acme", f"runs:{n}") for n in "abc"] == [1, 1, 1]  # replay kept identity

    run(test, clock=clock)


@pytest.mark.parametrize("fail", [False, True])
def test_a_parent_waits_for_its_child_and_catches_its_failure(run: Run, fail: bool) -> None:
    async def test(h: Harness) -> None:
        instance = await start(h, "p", mode="parent", fail=fail)
        status = await h.wait_for(instance, "complete", "errored")
        if fail:
            assert status["output"] == {"caught": "NonRetryableError", "message": "kid failed"}
        else:
            assert status["output"] == {"child": "kid done"}
        (child,) = [r for r in await h.engine.store.list_instances() if r.parent == instance]
        assert (await h.engine.status(child.id))["status"] == ("errored" if fail else "complete")

    run(test)


def test_a_terminated_parent_terminates_its_children(run: Run) -> None:
    async def test(h: Harness) -> None:
        instance = await start(h, "holder", mode="holder")
        await h.wait_for(instance, "waiting")
        for _ in range(500):
            children = [r for r in await h.engine.store.list_instances() if r.parent == instance]
            if children and children[0].status == "waiting":
                break
            await asyncio.sleep(0.02)
        (child,) = children
        await h.engine.terminate(instance)
        assert (await h.engine.status(child.id))["status"] == "terminated"

    run(test, clock=ManualClock())


def test_retention_purges_only_finished_instances_past_it(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        done = await start(h, "done", mode="child", fail=False)
        held = await start(h, "held", mode="sleeper")
        await h.wait_for(done, "complete")
        await h.wait_for(held, "waiting")
        assert await h.engine.retention.purge_once() == 0  # not old enough yet
        clock.advance(3600 * 24 * 8 - 60)
        assert await h.engine.retention.purge_once() == 1
        with pytest.raises(InstanceNotFound):
            await h.engine.record(done)
        assert (await h.engine.record(held)).status in ("waiting", "queued")

    run(test, clock=clock)
