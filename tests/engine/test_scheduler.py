"""The scheduler (`engine.scheduler`): bounded concurrency, per-tenant fairness, timers, cancel.

Each test drives a `Scheduler` with a fake `run(instance_id, due)` that records its calls and
then waits on a gate the test opens, so the test sees exactly which wake-ups run at once. Time
is a `ManualClock` moved by `advance`; the tests let the loop turn with `asyncio.sleep(0)` in a
bounded polling loop and never wait on, or assert about, the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from dynworkers.engine.scheduler import ManualClock, Scheduler

#: Loop turns a polling helper allows before it calls the scheduler stuck.
TURNS = 2_000
#: Loop turns after which something that should not happen is taken as not happening.
SETTLE = 50


class Runner:
    """A fake wake-up: records each call, holds it open until `release`, can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.active: set[str] = set()
        self.most_at_once = 0
        self.cancelled: list[str] = []
        self.failing: set[str] = set()
        self.overlaps: list[str] = []  # ids that started while already running: never allowed
        self._gates: dict[str, asyncio.Event] = {}

    @property
    def order(self) -> list[str]:
        return [instance_id for instance_id, _ in self.calls]

    async def __call__(self, instance_id: str, due: float) -> None:
        if instance_id in self.active:
            self.overlaps.append(instance_id)
        self.calls.append((instance_id, due))
        self.active.add(instance_id)
        self.most_at_once = max(self.most_at_once, len(self.active))
        gate = self._gates[instance_id] = asyncio.Event()
        try:
            await gate.wait()
            if instance_id in self.failing:
                raise RuntimeError(f"wake-up of {instance_id} failed")
        except asyncio.CancelledError:
            self.cancelled.append(instance_id)
            raise
        finally:
            self.active.discard(instance_id)

    def release(self, instance_id: str) -> None:
        assert instance_id in self.active, f"{instance_id} is not running"
        self._gates[instance_id].set()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Turn the loop until `predicate()` holds; fail (not hang) if it never does."""
    for _ in range(TURNS):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def settle() -> None:
    """Turn the loop enough times for anything already due to have happened."""
    for _ in range(SETTLE):
        await asyncio.sleep(0)


def scheduled(
    body: Callable[[Scheduler, Runner, ManualClock], Coroutine[Any, Any, None]],
    max_running: int = 1,
) -> None:
    """Run `body` against a started scheduler on a manual clock; always close it."""

    async def main() -> None:
        runner = Runner()
        clock = ManualClock()
        scheduler = Scheduler(runner, clock, max_running)
        scheduler.start()
        try:
            await body(scheduler, runner, clock)
        finally:
            await scheduler.close()
        assert runner.overlaps == [], "an instance ran twice at once"

    asyncio.run(main())


def test_max_running_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_running"):
        Scheduler(Runner(), ManualClock(), 0)


# --- bounded concurrency -------------------------------------------------------------------------


def test_at_most_max_running_wake_ups_run_at_once_and_every_one_runs() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        ids = [f"i{n}" for n in range(10)]
        for instance_id in ids:
            scheduler.ready(instance_id, "t")
        await until(lambda: len(runner.active) == 3, "three wake-ups running")
        await settle()
        assert len(runner.active) == 3 and len(scheduler.running) == 3
        assert scheduler.queued == 7
        for finished in range(1, len(ids) + 1):
            oldest = next(i for i in runner.order if i in runner.active)
            runner.release(oldest)
            await until(lambda oldest=oldest: oldest not in runner.active, f"{oldest} ends")
            await settle()
            assert len(runner.active) == min(3, len(ids) - finished)
        assert runner.most_at_once == 3
        assert sorted(runner.order) == sorted(ids)
        assert scheduler.running == {} and scheduler.queued == 0

    scheduled(body, max_running=3)


def test_ready_instances_of_one_tenant_run_in_the_order_they_became_ready() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        ids = [f"i{n}" for n in range(5)]
        for instance_id in ids:
            scheduler.ready(instance_id, "t")
        for n in range(len(ids)):
            await until(lambda n=n: len(runner.calls) == n + 1, f"run {n + 1}")
            runner.release(runner.order[-1])
        assert runner.order == ids

    scheduled(body)


def test_ready_passes_its_due_time_or_now_to_the_wake_up() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.ready("now", None)
        await until(lambda: len(runner.calls) == 1, "first run")
        runner.release("now")
        scheduler.ready("given", None, due=123.0)
        await until(lambda: len(runner.calls) == 2, "second run")
        runner.release("given")
        assert runner.calls == [("now", clock.now()), ("given", 123.0)]

    scheduled(body)


# --- fairness ------------------------------------------------------------------------------------


def test_one_tenants_thousand_queued_instances_do_not_starve_anothers_one() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.ready("a-first", "A")  # takes the only slot, so everything below is queued
        await until(lambda: runner.active == {"a-first"}, "a-first running")
        for n in range(1_000):
            scheduler.ready(f"a{n}", "A")
        scheduler.ready("b", "B")
        assert scheduler.queued == 1_001
        runner.release("a-first")
        await until(lambda: "a-first" not in runner.active, "a-first ends")
        from_queue: list[str] = []
        while "b" not in from_queue and len(from_queue) < 5:
            await until(lambda: len(runner.active) == 1, "the next queued wake-up")
            (current,) = runner.active
            from_queue.append(current)
            runner.release(current)
            await until(lambda current=current: current not in runner.active, f"{current} ends")
        assert "b" in from_queue[:2], from_queue

    scheduled(body)


def test_tenants_with_ready_work_take_turns_one_instance_each() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.ready("blocker", "Z")
        await until(lambda: runner.active == {"blocker"}, "blocker running")
        for tenant in ("A", "B", "C"):
            for n in range(3):
                scheduler.ready(f"{tenant}{n}", tenant)
        runner.release("blocker")
        for n in range(9):
            await until(lambda n=n: len(runner.calls) == n + 2, f"run {n + 2}")
            runner.release(runner.order[-1])
        assert runner.order[1:] == ["A0", "B0", "C0", "A1", "B1", "C1", "A2", "B2", "C2"]

    scheduled(body)


# --- timers --------------------------------------------------------------------------------------


def test_a_timer_does_not_fire_before_its_time_and_fires_once_it_has_passed() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        wake_at = clock.now() + 10
        scheduler.at("sleeper", "t", wake_at)
        await settle()
        assert runner.calls == [] and scheduler.waiting == 1
        clock.advance(9.999)
        await settle()
        assert runner.calls == []
        clock.advance(0.001)
        await until(lambda: len(runner.calls) == 1, "the timer fires")
        assert runner.calls == [("sleeper", wake_at)]
        assert scheduler.waiting == 0
        runner.release("sleeper")
        clock.advance(100)
        await settle()
        assert len(runner.calls) == 1  # a timer fires once

    scheduled(body)


def test_a_timer_already_due_fires_without_advancing_the_clock() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.at("late", None, clock.now() - 5)
        await until(lambda: runner.order == ["late"], "the overdue timer fires")

    scheduled(body)


def test_a_timer_set_before_start_fires_once_started() -> None:
    async def main() -> None:
        runner = Runner()
        clock = ManualClock()
        scheduler = Scheduler(runner, clock, 1)
        scheduler.at("early-bird", None, clock.now() + 1)
        try:
            scheduler.start()
            await settle()
            assert runner.calls == []
            clock.advance(1)
            await until(lambda: runner.order == ["early-bird"], "the timer fires")
        finally:
            await scheduler.close()

    asyncio.run(main())


def test_the_earliest_of_several_timers_wakes_first() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        start = clock.now()
        scheduler.at("late", None, start + 30)
        scheduler.at("early", None, start + 10)
        scheduler.at("middle", None, start + 20)
        clock.advance(10)
        await until(lambda: len(runner.calls) == 1, "the earliest timer fires")
        await settle()
        assert runner.order == ["early"]
        runner.release("early")
        clock.advance(10)
        await until(lambda: len(runner.calls) == 2, "the middle timer fires")
        await settle()
        assert runner.order == ["early", "middle"]
        runner.release("middle")
        clock.advance(10)
        await until(lambda: len(runner.calls) == 3, "the last timer fires")
        assert runner.order == ["early", "middle", "late"]

    scheduled(body)


def test_timers_due_together_wake_in_time_order() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        start = clock.now()
        for name, offset in [("c", 3), ("a", 1), ("d", 4), ("b", 2)]:
            scheduler.at(name, None, start + offset)
        clock.advance(10)
        for n in range(4):
            await until(lambda n=n: len(runner.calls) == n + 1, f"timer {n + 1}")
            runner.release(runner.order[-1])
        assert runner.calls == [
            ("a", start + 1),
            ("b", start + 2),
            ("c", start + 3),
            ("d", start + 4),
        ]

    scheduled(body)


def test_a_later_at_replaces_the_earlier_timer_of_the_same_instance() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        start = clock.now()
        scheduler.at("x", None, start + 10)
        scheduler.at("x", None, start + 20)
        clock.advance(15)
        await settle()
        assert runner.calls == [] and scheduler.waiting == 1
        clock.advance(5)
        await until(lambda: len(runner.calls) == 1, "the moved timer fires")
        runner.release("x")
        clock.advance(100)
        await settle()
        assert runner.calls == [("x", start + 20)]

    scheduled(body)


def test_ready_runs_a_sleeping_instance_now_and_drops_its_timer() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.at("x", None, clock.now() + 10)
        scheduler.ready("x", None)
        await until(lambda: len(runner.calls) == 1, "x runs at once")
        assert scheduler.waiting == 0
        runner.release("x")
        clock.advance(100)
        await settle()
        assert len(runner.calls) == 1

    scheduled(body)


def test_at_moves_a_queued_instance_onto_a_timer() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.ready("blocker", None)
        await until(lambda: runner.active == {"blocker"}, "blocker running")
        scheduler.ready("x", None)
        scheduler.at("x", None, clock.now() + 10)
        assert scheduler.queued == 0 and scheduler.waiting == 1
        runner.release("blocker")
        await settle()
        assert runner.order == ["blocker"]
        clock.advance(10)
        await until(lambda: runner.order == ["blocker", "x"], "x's timer fires")

    scheduled(body)


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_removes_a_timer() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.at("x", None, clock.now() + 10)
        scheduler.at("y", None, clock.now() + 20)
        scheduler.cancel("x")
        assert scheduler.waiting == 1
        clock.advance(100)
        await until(lambda: len(runner.calls) == 1, "y's timer fires")
        await settle()
        assert runner.order == ["y"]

    scheduled(body)


def test_cancel_removes_a_queued_entry() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.ready("blocker", "t")
        await until(lambda: runner.active == {"blocker"}, "blocker running")
        scheduler.ready("x", "t")
        scheduler.ready("y", "t")
        scheduler.cancel("x")
        assert scheduler.queued == 1
        runner.release("blocker")
        await until(lambda: len(runner.calls) == 2, "y runs")
        runner.release("y")
        await settle()
        assert runner.order == ["blocker", "y"]
        assert scheduler.queued == 0 and scheduler.running == {}

    scheduled(body)


def test_a_cancelled_instance_made_ready_again_runs_once() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.ready("blocker", "t")
        await until(lambda: runner.active == {"blocker"}, "blocker running")
        scheduler.ready("x", "t")
        scheduler.cancel("x")
        scheduler.ready("x", "t")
        runner.release("blocker")
        await until(lambda: len(runner.calls) == 2, "x runs")
        runner.release("x")
        await settle()
        assert runner.order == ["blocker", "x"]

    scheduled(body)


def test_cancel_drops_a_run_again_asked_for_while_running() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.ready("x", None)
        await until(lambda: runner.active == {"x"}, "x running")
        scheduler.ready("x", None)
        scheduler.cancel("x")
        runner.release("x")
        await settle()
        assert runner.order == ["x"] and scheduler.running == {}

    scheduled(body)


# --- ready while running -------------------------------------------------------------------------


def test_ready_on_a_running_instance_runs_it_again_once_after_it_finishes() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        scheduler.ready("x", "t")
        await until(lambda: runner.active == {"x"}, "x running")
        for _ in range(3):
            scheduler.ready("x", "t")
        await settle()
        assert len(runner.calls) == 1  # not concurrently
        assert scheduler.queued == 0
        runner.release("x")
        await until(lambda: len(runner.calls) == 2, "x runs again")
        runner.release("x")
        await settle()
        assert runner.order == ["x", "x"]
        assert runner.most_at_once == 1
        assert scheduler.running == {}

    scheduled(body, max_running=4)


# --- failures and close --------------------------------------------------------------------------


def test_a_wake_up_that_raises_is_logged_and_the_scheduler_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        runner.failing.add("bad")
        scheduler.ready("bad", "t")
        scheduler.ready("good", "t")
        await until(lambda: runner.active == {"bad"}, "bad running")
        runner.release("bad")
        await until(lambda: runner.active == {"good"}, "good runs after bad failed")
        runner.release("good")
        await until(lambda: scheduler.running == {}, "all done")
        scheduler.at("later", "t", clock.now() + 1)
        clock.advance(1)
        await until(lambda: runner.order == ["bad", "good", "later"], "timers still fire")
        runner.release("later")

    with caplog.at_level(logging.ERROR, logger="dynworkers.engine"):
        scheduled(body)
    failures = [r for r in caplog.records if "'bad'" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_close_cancels_running_wake_ups_and_stops_timers_and_new_work() -> None:
    async def main() -> None:
        runner = Runner()
        clock = ManualClock()
        scheduler = Scheduler(runner, clock, 2)
        scheduler.start()
        scheduler.ready("x", None)
        scheduler.ready("y", None)
        scheduler.ready("queued", None)
        scheduler.at("sleeper", None, clock.now() + 5)
        await until(lambda: runner.active == {"x", "y"}, "x and y running")
        await scheduler.close()
        assert sorted(runner.cancelled) == ["x", "y"]
        assert runner.active == set()
        assert scheduler.closed
        scheduler.ready("after", None)
        scheduler.at("after-timer", None, clock.now())
        clock.advance(100)
        await settle()
        assert sorted(runner.order) == ["x", "y"]

    asyncio.run(main())


def test_hibernating_instances_of_one_tenant_share_one_tenant_string() -> None:
    async def body(scheduler: Scheduler, runner: Runner, clock: ManualClock) -> None:
        start = clock.now()
        for n in range(100):
            tenant = "".join(["ac", "me"])  # a fresh string each time, as each store row's is
            scheduler.at(f"i{n}", tenant, start + 10 + n)
        keys = {id(entry[2]) for entry in scheduler._timers}
        assert len(keys) == 1 and scheduler.waiting == 100

    scheduled(body)
