"""A new sleep travels in the run's outcome instead of a call of its own (one message fewer per
sleep), and is recorded on the host exactly as the call would have recorded it.

The sandbox side (`engine.replay.run_workflow`) is driven with a transport that records its
calls; the host side runs real sandboxes on SQLite with a `ManualClock`. No timing is asserted:
waits poll for a state, with timeouts that only guard a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.engine import session as session_module
from dynworkers.engine import wakeup
from dynworkers.engine.replay import WorkflowEntrypoint, run_workflow
from dynworkers.engine.scheduler import ManualClock
from tests.engine.harness import Harness

NOW_MS = 1_800_000_000_000


class Calls:
    def __init__(self) -> None:
        self.made: list[tuple[str, tuple[Any, ...]]] = []

    def call(self, method: str, *args: Any) -> Any:
        self.made.append((method, args))
        return NOW_MS + 60_000 if method == "sleep" else None

    def notify(self, method: str, *args: Any) -> None:
        self.made.append((method, args))


class Sleeper(WorkflowEntrypoint):
    def run(self, event: Any, step: Any) -> str:
        if event.payload.get("until"):
            step.sleep_until("nap", event.payload["until"])
        else:
            step.sleep("nap", "1 minute")
        return "woke"


def _outcome(fold_ms: int, **payload: Any) -> tuple[dict[str, Any], Calls]:
    calls = Calls()
    event = {"payload": payload, "timestamp": 1.0, "instance_id": "i", "workflow_name": "w"}
    handover = {
        "history": [],
        "now": NOW_MS,
        "max_steps": 100,
        "run_deadline_ms": 30_000 if fold_ms else 0,
        "fold_ms": fold_ms,
    }
    return run_workflow(Sleeper(None, None), event, calls, handover), calls  # type: ignore[arg-type]


def test_a_new_sleep_travels_in_the_outcome_when_the_host_allows_folding() -> None:
    outcome, calls = _outcome(fold_ms=5)
    assert calls.made == []
    assert outcome["s"] == "suspend" and outcome["why"] == "sleep"
    assert outcome["sleep"] == [0, "nap", 0, 60_000, None]  # the sleep call's arguments


def test_without_folding_or_for_a_time_already_past_the_sleep_is_a_call() -> None:
    outcome, calls = _outcome(fold_ms=0)
    assert calls.made == [("sleep", (0, "nap", 0, 60_000, None))]
    assert "sleep" not in outcome and outcome["wake"] == NOW_MS + 60_000
    # a sleep_until already past: the host records it complete, and the run goes on
    outcome, calls = _outcome(fold_ms=5, until=NOW_MS - 1)
    assert calls.made == [("sleep", (0, "nap", 0, None, NOW_MS - 1))]
    assert "sleep" not in outcome


NAPPER = """
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        first = step.do("first", lambda: 1)
        step.sleep("nap", event.payload["ms"])
        return first + step.do("after", lambda: 1)
"""


def test_a_folded_sleep_is_recorded_with_its_history_and_the_instance_wakes_after_it(
    config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    folded: list[str] = []
    record = wakeup._record_folded_sleep

    async def counting(engine: Any, session: Any, instance: Any, args: Any) -> bool:
        folded.append(instance.id)
        return await record(engine, session, instance, args)

    monkeypatch.setattr(wakeup, "_record_folded_sleep", counting)
    monkeypatch.setattr(session_module, "FOLD_MS", 60_000)  # no body too slow to fold, loaded
    clock = ManualClock()

    async def main() -> None:
        async with Harness(config(), clock=clock) as h:
            h.deploy("acme", NAPPER)
            created = await h.engine.create(
                h.workflow.name,
                [("a", {"__dispatcherMetadata": {"tenant_id": "acme"}, "params": {"ms": 5000}})],
                tenant="acme",
            )
            (instance,) = created
            await h.wait_for(instance, "waiting")
            assert folded == [instance]
            seen = await h.engine.history(instance)
            (nap,) = [step for step in seen["steps"] if step["kind"] == "sleep"]
            assert nap["name"] == "nap" and nap["wake_at"] == clock.now() + 5
            assert [entry["kind"] for entry in seen["timeline"]].count("sleep") == 1
            clock.advance(5)
            done = await h.wait_for(instance, "complete")
            assert done["output"] == 2
            assert folded == [instance]  # the second wake-up replayed the sleep: no new one

    asyncio.run(main())


def test_a_folded_sleep_already_over_runs_on_and_a_pause_asked_meanwhile_is_settled(
    config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zero sleep is recorded complete and the instance runs on at once; a pause that arrives
    after the run's last answer and before its folded sleep is recorded leaves it paused (not
    stuck waiting for a pause that no wake-up would settle)."""
    record = wakeup._record_folded_sleep
    pause_first: set[str] = set()

    async def pausing(engine: Any, session: Any, instance: Any, args: Any) -> bool:
        if instance.id in pause_first:
            await engine.pause(instance.id)
        return await record(engine, session, instance, args)

    monkeypatch.setattr(wakeup, "_record_folded_sleep", pausing)
    monkeypatch.setattr(session_module, "FOLD_MS", 60_000)

    async def main() -> None:
        async with Harness(config(), clock=ManualClock()) as h:
            h.deploy("acme", NAPPER)
            envelope = {"__dispatcherMetadata": {"tenant_id": "acme"}, "params": {"ms": 0}}
            (zero,) = await h.engine.create(h.workflow.name, [("zero", envelope)], tenant="acme")
            assert (await h.wait_for(zero, "complete"))["output"] == 2
            pause_first.add("acme/paused")
            (paused,) = await h.engine.create(
                h.workflow.name, [("paused", envelope)], tenant="acme"
            )
            await h.wait_for(paused, "paused")
            pause_first.clear()
            await h.engine.resume(paused)
            assert (await h.wait_for(paused, "complete"))["output"] == 2

    asyncio.run(main())
