"""A quick step's `begin` travels with its outcome: one message and one commit a step.

Real sandboxes (one per tenant, so that each wake-up finds what the last one learnt), SQLite on
disk. Whether a step folds is decided in the sandbox: its body ran in under the host's
`session.FOLD_MS` last time there; the tests raise that threshold to a minute, so that no body
here is ever too slow to fold on a loaded machine. The host counts the `begin` notifications it
serves. No timing is asserted: waits poll for a state, with timeouts that only guard a hang.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.engine import session as session_module
from tests.engine.harness import Harness

STEPS = """
from workers import WorkflowEntrypoint


def second(env, hang):
    if hang and env.KV.get("hung") is None:
        env.KV.put("hung", 1)
        while True:  # killed by the run's deadline: this attempt folded its begin
            pass
    return 2


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        hang = event.payload.get("hang", False)
        first = step.do("first", lambda: self.env.KV.put("runs:first",
                                                          (self.env.KV.get("runs:first") or 0) + 1)
                        or 1)
        total = first + step.do("second", lambda: second(self.env, hang))
        return total + step.do("third", lambda: 3)
"""


@pytest.fixture
def begins(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """`begin` notifications served, per instance id (counted, not changed)."""
    monkeypatch.setattr(session_module, "FOLD_MS", 60_000)
    counted: Counter[str] = Counter()
    serve = session_module.StepSession._begin

    async def counting(self: session_module.StepSession, *args: Any) -> None:
        counted[self.id] += 1
        await serve(self, *args)

    monkeypatch.setattr(session_module.StepSession, "_begin", counting)
    return counted


def _run(config: Callable[..., Any], test: Callable[[Harness], Any]) -> None:
    async def main() -> None:
        async with Harness(config(deadline=1.0, max_sandboxes_per_tenant=1)) as harness:
            await test(harness)

    asyncio.run(main())


async def _create(h: Harness, local: str, params: dict[str, Any]) -> str:
    await h.fetch("acme", {"id": local, "params": params})
    return f"acme/{local}"


def test_a_quick_step_sends_its_begin_with_its_complete(
    config: Callable[..., Any], begins: Counter[str]
) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", STEPS_WITH_FETCH)
        first = await _create(h, "a", {})
        assert (await h.wait_for(first, "complete"))["output"] == 6
        again = await _create(h, "b", {})
        assert (await h.wait_for(again, "complete"))["output"] == 6
        # a: every step announced (none ran in this sandbox before); b: none
        assert begins[first] == 3
        assert begins[again] == 0
        view = await h.engine.instance(again).history()
        for step in view["steps"]:
            (attempt,) = step["attempts"]
            assert attempt["outcome"] == "complete" and attempt["attempt"] == 1
            assert attempt["start"] <= attempt["end"]

    _run(config, test)


def test_a_folded_step_that_hangs_runs_again_announced_and_no_recorded_step_reruns(
    config: Callable[..., Any], begins: Counter[str]
) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", STEPS_WITH_FETCH)
        warm = await _create(h, "warm", {})
        await h.wait_for(warm, "complete")
        instance = await _create(h, "hangs", {"hang": True})
        status = await h.wait_for(instance, "complete", "errored")
        assert status["status"] == "complete" and status["output"] == 6
        assert h.kv("acme", "hung") == 1  # the folded attempt ran, and was killed
        assert h.kv("acme", "runs:first") == 2  # once for "warm", once for "hangs": not rerun
        # "second" and "third" were announced only by the wake-up after the loss
        assert begins[instance] == 2
        view = await h.engine.instance(instance).history()
        second = next(step for step in view["steps"] if step["name"] == "second")
        assert [a["outcome"] for a in second["attempts"]] == ["complete"]
        assert h.supervisor.stats()["evictions"]["deadline"] == 1

    _run(config, test)


STEPS_WITH_FETCH = (
    STEPS.replace(
        "from workers import WorkflowEntrypoint",
        "from workers import Response, WorkerEntrypoint, WorkflowEntrypoint",
    )
    + """

class Default(WorkerEntrypoint):
    def fetch(self, request):
        body = request.json()
        created = self.env.WORKFLOWS.create(id=body["id"], params=body["params"])
        return Response.json({"id": created.id})
"""
)
