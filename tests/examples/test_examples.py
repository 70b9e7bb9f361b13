"""The example tenants under `examples/tenants/` work end to end, in real sandboxes.

Each example directory is deployed as it is (every `<name>.py` a module, `main` the main one) on
the engine harness: a real Supervisor and Engine on SQLite, with `env.KV` and `env.WORKFLOWS`.
Requests go through the tenant's own fetch handler, with the URLs that `dynworkers serve` passes
after stripping the tenant's prefix. The happy paths run on the real clock, because the examples
keep their sleeps and retry delays to a second or two; waits have timeouts only to catch a hang.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dynworkers.engine import ManualClock
from dynworkers.loader import WorkerCode
from tests.engine.harness import Harness

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tenants"
TENANT_LOGGER = "dynworkers.tenant"
BASE = "http://127.0.0.1:8787"

Run = Callable[..., None]


class ExampleHarness(Harness):
    """The engine harness, deploying an example directory with all of its modules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modules: dict[str, dict[str, str]] = {}

    def deploy_example(self, tenant: str) -> None:
        modules = {path.stem: path.read_text() for path in (EXAMPLES / tenant).glob("*.py")}
        self.modules[tenant] = modules
        self.deploy(tenant, modules["main"])

    def code(self, tenant: str, version: str) -> WorkerCode:
        return dataclasses.replace(super().code(tenant, version), modules=self.modules[tenant])

    async def request(
        self, tenant: str, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        """`method path` to the tenant's fetch handler, as the daemon sends it (mount stripped,
        X-Forwarded-Prefix set); the status and the JSON reply."""
        stub = await self.stub(tenant)
        data = None if body is None else json.dumps(body)
        headers = {"x-forwarded-prefix": f"/{tenant}"}
        response = await stub.fetch(BASE + path, method=method, headers=headers, body=data)
        return response.status, response.json()


@pytest.fixture
def run(config: Callable[..., Any]) -> Run:
    """`run(test, **engine_options)`: run `await test(harness)` on a fresh harness."""

    def go(test: Callable[[ExampleHarness], Any], **options: Any) -> None:
        async def main() -> None:
            async with ExampleHarness(config(), **options) as harness:
                await test(harness)

        asyncio.run(main())

    return go


async def wait_for_event_wait(
    h: Harness, instance_id: str, event_type: str, timeout: float = 20.0
) -> None:
    """Until the instance hibernates in `step.wait_for_event` for `event_type`."""
    deadline = time.monotonic() + timeout
    while True:
        record = await h.engine.store.get_instance(instance_id)
        waiting = record.status == "waiting" and record.waiting_for == event_type
        # and its wake-up has ended (until then the engine reports it running)
        if waiting and (await h.engine.status(instance_id))["status"] == "waiting":
            return
        if record.status in ("complete", "errored", "terminated"):
            raise AssertionError(f"{instance_id} ended as {record.status} before waiting")
        if time.monotonic() > deadline:
            raise AssertionError(f"{instance_id} is {record.status}, not waiting for {event_type}")
        await asyncio.sleep(0.01)


async def attempts(h: Harness, instance_id: str) -> dict[str, int]:
    """How many attempts each `step.do` of the instance took, by step name."""
    return {s.name: s.attempts for s in await h.engine.store.steps(instance_id) if s.kind == "do"}


def tenant_lines(caplog: pytest.LogCaptureFixture, tenant: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == TENANT_LOGGER and str(getattr(r, "tenant_id", "")).startswith(tenant + "@")
    ]


# --- counter -------------------------------------------------------------------------------------


def test_counter_counts_each_hit_logs_it_and_resets(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TENANT_LOGGER)

    async def test(h: ExampleHarness) -> None:
        h.deploy_example("counter")
        for n in (1, 2, 3):
            assert await h.request("counter", "GET", "/") == (
                200,
                {"tenant": "counter", "hits": n},
            )
        assert h.kv("counter", "hits") == 3
        assert await h.request("counter", "DELETE", "/") == (200, {"tenant": "counter", "hits": 0})
        assert (await h.request("counter", "GET", "/?from=test"))[1]["hits"] == 1
        assert await h.request("counter", "POST", "/reset") == (
            200,
            {"tenant": "counter", "hits": 0},
        )
        status, reply = await h.request("counter", "GET", "/favicon.ico")
        assert status == 404 and "no route GET /favicon.ico" in reply["error"]
        assert h.kv("counter", "hits") is None

    run(test)
    lines = tenant_lines(caplog, "counter")
    assert [line for line in lines if line.startswith("hit number")] == [
        "hit number 1",
        "hit number 2",
        "hit number 3",
        "hit number 1",
    ]


# --- pipeline ------------------------------------------------------------------------------------


def test_pipeline_retries_its_build_waits_for_approval_and_deploys(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TENANT_LOGGER)

    async def test(h: ExampleHarness) -> None:
        h.deploy_example("pipeline")
        status, created = await h.request("pipeline", "POST", "/", {"commit": "abc123"})
        assert status == 201
        run_id = created["id"]
        assert created["status_url"] == f"{BASE}/pipeline/{run_id}"
        assert created["approve_url"] == f"{BASE}/pipeline/{run_id}/approve"

        await wait_for_event_wait(h, f"pipeline/{run_id}", "approval")
        status, reply = await h.request("pipeline", "GET", f"/{run_id}")
        assert (status, reply["id"], reply["status"]) == (200, run_id, "waiting")

        approved = await h.request("pipeline", "POST", f"/{run_id}/approve", {"by": "alice"})
        assert approved == (202, {"id": run_id, "approved_by": "alice"})
        await h.wait_for(f"pipeline/{run_id}", "complete")

        status, reply = await h.request("pipeline", "GET", f"/{run_id}")
        output = reply["output"]
        assert (status, reply["status"], reply["error"]) == (200, "complete", None)
        assert output["commit"] == "abc123" and output["deployed"] is True
        assert output["approved_by"] == "alice"
        assert output["build"] == {"artifact": "app-abc123.whl", "attempts": 2}
        assert output["deploy"]["artifact"] == "app-abc123.whl"
        assert h.kv("pipeline", f"build-attempts:{run_id}") == 2
        assert await attempts(h, f"pipeline/{run_id}") == {
            "checkout": 1,
            "build": 2,
            "test": 1,
            "deploy": 1,
        }

    run(test)
    lines = tenant_lines(caplog, "pipeline")
    assert any("build attempt 1 failed" in line for line in lines), lines
    assert any("approved by alice" in line for line in lines), lines


def test_pipeline_routes_answer_404_for_unknown_runs_and_400_for_bad_bodies(run: Run) -> None:
    async def test(h: ExampleHarness) -> None:
        h.deploy_example("pipeline")
        status, reply = await h.request("pipeline", "GET", "/nope")
        assert status == 404 and "nope" in reply["error"]
        status, reply = await h.request("pipeline", "POST", "/nope/approve", {"by": "bob"})
        assert status == 404 and "nope" in reply["error"]
        stub = await h.stub("pipeline")
        response = await stub.fetch(BASE + "/", method="POST", body="not json")
        assert response.status == 400
        assert (await h.request("pipeline", "PUT", "/"))[0] == 404

    run(test)


def test_pipeline_without_approval_ends_after_an_hour_without_deploying(run: Run) -> None:
    clock = ManualClock()

    async def test(h: ExampleHarness) -> None:
        h.deploy_example("pipeline")
        run_id = (await h.request("pipeline", "POST", "/"))[1]["id"]
        instance = f"pipeline/{run_id}"
        deadline = time.monotonic() + 20.0
        while (await h.engine.status(instance))["status"] != "complete":
            # Every wait of the run (build retry, deploy window, approval) is at most an hour.
            if (await h.engine.store.get_instance(instance)).status == "waiting":
                clock.advance(3601)
            assert time.monotonic() < deadline, "the run did not finish"
            await asyncio.sleep(0.01)
        output = (await h.engine.status(instance))["output"]
        assert output == {
            "commit": "HEAD",
            "deployed": False,
            "reason": "not approved within 1 hour",
        }

    run(test, clock=clock)


# --- agent ---------------------------------------------------------------------------------------


def test_agent_runs_its_plan_and_retries_the_busy_model(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TENANT_LOGGER)

    async def test(h: ExampleHarness) -> None:
        h.deploy_example("agent")
        assert set(h.modules["agent"]) == {"main", "model"}
        goal = "a post about durable workflows"
        status, created = await h.request("agent", "POST", "/", {"goal": goal})
        assert status == 201 and created["goal"] == goal
        run_id = created["id"]
        await h.wait_for(f"agent/{run_id}", "complete")

        status, reply = await h.request("agent", "GET", f"/{run_id}")
        assert (status, reply["status"], reply["error"]) == (200, "complete", None)
        output = reply["output"]
        assert output["goal"] == goal
        assert [s["title"] for s in output["sections"]] == ["Introduction", "Details", "Conclusion"]
        assert all(goal in s["text"] for s in output["sections"])
        assert output["review"]["approved"] is True and output["review"]["sections"] == 3
        # two busy calls, then one per section
        assert h.kv("agent", f"model-calls:{run_id}") == 5
        assert await attempts(h, f"agent/{run_id}") == {
            "research": 1,
            "outline": 1,
            "draft Introduction": 3,
            "draft Details": 1,
            "draft Conclusion": 1,
            "review": 1,
        }

    run(test)
    lines = tenant_lines(caplog, "agent")
    assert sum("researching" in line for line in lines) == 1, lines  # not re-run on retries


def test_agent_refuses_a_run_without_a_goal(run: Run) -> None:
    async def test(h: ExampleHarness) -> None:
        h.deploy_example("agent")
        status, reply = await h.request("agent", "POST", "/", {"topic": "no goal"})
        assert status == 400 and "goal" in reply["error"]
        assert (await h.request("agent", "POST", "/", {"goal": 42}))[0] == 400
        assert (await h.request("agent", "POST", "/"))[0] == 400
        assert (await h.request("agent", "GET", "/missing"))[0] == 404

    run(test)
