"""The hot paths are recorded per tenant per minute, durably, and exposed by both the engine and
`Supervisor.stats()`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dynworkers.engine import Engine, ManualClock, WorkflowEntrypoint
from tests.engine.harness import Harness
from tests.tenants import workflows as programs


def _sums(rows: list[dict[str, Any]], tenant: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        if row["tenant"] == tenant:
            out[row["name"]] = out.get(row["name"], 0) + row["count"]
    return out


def test_wake_ups_boots_and_evictions_are_kept_per_tenant_and_survive_a_restart(
    config: Callable[..., Any],
) -> None:
    clock = ManualClock()

    async def main() -> None:
        # one sandbox for the tenant: the first wake-up may otherwise start a second one while
        # the fetch that created it still runs, and evict() would end (and count) both
        async with Harness(config(max_sandboxes_per_tenant=1), clock=clock) as h:
            h.deploy("acme", programs.PIPELINE)
            await h.fetch("acme", {"id": "a", "params": {"n": 1, "nap": 1000}})
            await h.wait_for("acme/a", "waiting")  # first wake-up: warm (fetch booted it)
            h.supervisor.evict("acme@v1")
            clock.advance(1)
            await h.wait_for("acme/a", "complete")  # second wake-up: cold
            sums = _sums(await h.engine.hot_paths(), "acme@v1")
            assert sums["wake.warm"] == 1 and sums["wake.cold"] == 1
            assert sums["evict.manual"] == 1 and sums["boot_ms"] >= 1
            assert sums["due_to_running_ms"] == 2
            stats = h.supervisor.stats()["workflows"]
            assert set(stats) >= {"running", "ready", "hibernating", "due_to_running_ms"}
        # a new engine on the same store still has the history
        async with Harness(config(), clock=clock) as again:
            sums = _sums(await again.engine.hot_paths(), "acme@v1")
            assert sums["wake.cold"] == 1 and sums["evict.manual"] == 1

    asyncio.run(main())


class Adder(WorkflowEntrypoint):
    """A host-side workflow: runs in a worker thread of the host, with the same step object."""

    def run(self, event: Any, step: Any) -> Any:
        a = step.do("a", lambda: event.payload["x"] + 1)
        step.sleep("nap", "1 minute")
        return step.do("b", lambda: a * 10)


def test_a_host_side_workflow_runs_with_the_same_semantics(tmp_path: Any) -> None:
    clock = ManualClock()

    async def main() -> None:
        async with Engine(store=f"sqlite:///{tmp_path / 'engine.db'}", clock=clock) as engine:
            adder = engine.register("adder", Adder)
            instance = await adder.create(params={"x": 1})
            while (await instance.status())["status"] != "waiting":
                await asyncio.sleep(0.01)
            clock.advance(60)
            while (status := await instance.status())["status"] != "complete":
                await asyncio.sleep(0.01)
            assert status["output"] == 20
            kinds = [(s.kind, s.name, s.status) for s in await engine.store.steps(instance.id)]
            assert kinds == [
                ("do", "a", "complete"),
                ("sleep", "nap", "pending"),
                ("do", "b", "complete"),
            ]

    asyncio.run(main())
