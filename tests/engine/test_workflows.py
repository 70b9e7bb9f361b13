"""Durable semantics end to end: tenant workflows in real sandboxes, on SQLite on disk.

Time is a `ManualClock` wherever a sleep, a timeout or a retry delay is involved: the tests move
it forward instead of waiting. "Ran once" is counted in the tenant's KV, which lives on the host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from dynworkers.engine import (
    InstanceExists,
    InstanceNotFound,
    InvalidInput,
    InvalidTransition,
    ManualClock,
    WorkflowEntrypoint,
)
from dynworkers.runtime import TenantError
from dynworkers.runtime.bindings import ServiceContext
from tests.engine.harness import Harness
from tests.tenants import workflows as programs

Run = Callable[..., Any]


@pytest.fixture(params=["sqlite", "postgresql"])
def run(config: Callable[..., Any], request: pytest.FixtureRequest) -> Run:
    """`run(test, **engine_options)`: run `await test(harness)` on a fresh harness, once on each
    store backend (PostgreSQL: a fresh database on the test server)."""
    backend = (
        {"store": request.getfixturevalue("postgres_url")} if request.param != "sqlite" else {}
    )

    def go(test: Callable[[Harness], Any], **options: Any) -> None:
        async def main() -> None:
            async with Harness(config(), **{**backend, **options}) as harness:
                await test(harness)

        asyncio.run(main())

    return go


async def settle(harness: Harness, instance: str, *statuses: str) -> dict[str, Any]:
    return await harness.wait_for(instance, *statuses)


# --- replay --------------------------------------------------------------------------------------


def test_each_step_runs_once_and_the_return_value_is_the_output(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        assert await h.fetch("acme", {"id": "one", "params": {"n": 4}}) == {"id": "one"}
        status = await settle(h, "acme/one", "complete")
        assert status == {
            "status": "complete",
            "output": {"total": 6, "doubled": 12, "id": "one"},
            "error": None,
        }
        assert h.kv("acme", "runs:sum") == 1 and h.kv("acme", "runs:double") == 1

    run(test)


def test_a_sleeping_instance_holds_no_process_and_replays_recorded_steps(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        await h.fetch("acme", {"id": "nap", "params": {"n": 3, "nap": "2 days"}})
        await settle(h, "acme/nap", "waiting")
        assert h.supervisor.evict("acme@v1")  # hibernating: the sandbox can go
        assert h.supervisor.sandbox_pid("acme@v1") is None
        clock.advance(2 * 86400)
        status = await settle(h, "acme/nap", "complete")
        assert status["output"]["total"] == 3
        # the wake-up was a cold start that replayed both steps from their records
        assert h.kv("acme", "runs:sum") == 1 and h.kv("acme", "runs:double") == 1

    run(test, clock=clock)


def test_events_sent_before_the_wait_are_buffered_in_order(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        instance = await h.workflow.get(
            (
                await h.engine.create(
                    h.workflow.name,
                    [
                        (
                            "early",
                            {
                                "__dispatcherMetadata": {"tenant_id": "acme"},
                                "params": {"n": 2, "approval": True},
                            },
                        )
                    ],
                    tenant="acme",
                )
            )[0]
        )
        await instance.send_event("approval", {"who": "first"})
        await instance.send_event("approval", {"who": "second"})
        status = await settle(h, instance.id, "complete")
        assert status["output"]["approved"] == {"who": "first"}

    run(test)


def test_an_event_wakes_a_waiting_instance_and_a_timeout_raises(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        await h.fetch("acme", {"id": "yes", "params": {"n": 1, "approval": True}})
        await h.fetch("acme", {"id": "late", "params": {"n": 1, "approval": True}})
        await settle(h, "acme/yes", "waiting")
        await settle(h, "acme/late", "waiting")
        stub = (await h.stub("acme")).get_entrypoint()
        assert await stub.approve("yes", "ok")  # through the tenant's own binding
        assert (await settle(h, "acme/yes", "complete"))["output"]["approved"] == "ok"
        clock.advance(3601)
        status = await settle(h, "acme/late", "errored")
        assert status["error"]["name"] == "WaitTimeout"

    run(test, clock=clock)


# --- retries -------------------------------------------------------------------------------------


def test_retries_back_off_exponentially_on_the_injected_clock(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.FLAKY)
        instance = await create(h, "acme", "f", {"mode": "flaky"})
        delays = []
        for _ in range(2):  # attempts 1 and 2 fail; each schedules the next
            await settle(h, instance, "waiting")
            (step,) = await h.engine.store.steps(instance)
            delays.append(round(step.wake_at - clock.now(), 3))
            clock.advance(step.wake_at - clock.now())
        status = await settle(h, instance, "complete")
        assert delays == [1.0, 2.0]
        assert status["output"] == 3 and h.kv("acme", "attempts") == 3

    run(test, clock=clock)


def test_a_non_retryable_error_fails_the_step_at_once(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.FLAKY)
        instance = await create(h, "acme", "f", {"mode": "fatal"})
        status = await settle(h, instance, "errored")
        # as Cloudflare's: the instance fails with the tenant's own error, not a wrapper
        assert status["error"] == {"name": "NonRetryableError", "message": "card declined"}
        assert h.kv("acme", "fatal") == 1

    run(test)


def test_exhausted_retries_error_the_instance(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.FLAKY)
        instance = await create(h, "acme", "x", {"mode": "exhaust"})
        for _ in range(2):
            await settle(h, instance, "waiting")
            clock.advance(0.1)
        status = await settle(h, instance, "errored")
        assert "ValueError: down" in status["error"]["message"]
        (step,) = await h.engine.store.steps(instance)
        assert (step.status, step.attempts) == ("failed", 3)

    run(test, clock=clock)


def test_a_caught_step_error_is_the_same_on_replay(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.FLAKY)
        instance = await create(h, "acme", "c", {"mode": "caught"})
        status = await settle(h, instance, "complete")
        assert status["output"] == {"caught": "NonRetryableError", "message": "no"}

    run(test)


def test_a_bare_except_is_refused_in_tenant_code(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.BARE_EXCEPT)
        instance = await create(h, "acme", "b", {})
        status = await settle(h, instance, "errored")
        assert status["error"]["name"] == "CompileError"
        assert "bare 'except:' is not allowed" in status["error"]["message"]

    run(test)


class Swallower(WorkflowEntrypoint):
    """A host-side workflow (no RestrictedPython) whose bare except catches the suspension."""

    def run(self, event: Any, step: Any) -> str:
        try:  # noqa: SIM105 - a bare except is the point of the test
            step.sleep("nap", "1 hour")
        except:  # noqa: E722
            pass
        step.do("after", lambda: "x")  # raises the suspension again
        return "swallowed"


def test_a_bare_except_cannot_swallow_a_suspension(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        workflow = h.engine.register("swallower", Swallower)
        instance = await workflow.create(id="s")
        status = await settle(h, instance.id, "waiting")
        assert status["output"] is None
        assert [s.kind for s in await h.engine.store.steps("s")] == ["sleep"]
        clock.advance(3600)
        assert (await settle(h, instance.id, "complete"))["output"] == "swallowed"

    run(test, clock=clock)


def test_a_step_of_another_kind_under_a_recorded_name_is_a_determinism_error(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.FLAKY)
        instance = await create(h, "acme", "n", {"mode": "nondeterministic"})
        await settle(h, instance, "waiting")
        clock.advance(1)
        status = await settle(h, instance, "errored")
        assert status["error"]["name"] == "NonDeterminismError"
        assert "'first' (occurrence 1) was recorded as a do step" in status["error"]["message"]

    run(test, clock=clock)


def test_a_step_inserted_earlier_keeps_the_recorded_ones_by_name(run: Run) -> None:
    """Cloudflare's rule: the step name is the cache key, not the position."""
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.FLAKY)
        instance = await create(h, "acme", "i", {"mode": "inserted"})
        await settle(h, instance, "waiting")
        clock.advance(1)
        status = await settle(h, instance, "complete")
        assert status["output"] == {"new": "new", "old": "recorded"}
        assert h.kv("acme", "runs:a") == 1 and h.kv("acme", "runs:inserted") == 1
        steps = await h.engine.store.steps("acme/i")
        assert [(s.name, s.position) for s in steps] == [("a", 0), ("nap", 1), ("inserted", 2)]

    run(test, clock=clock)


def test_sleeps_and_waits_do_not_count_toward_the_step_limit(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.FLAKY)
        instance = await create(h, "acme", "z", {"mode": "sleepy"})
        status = await settle(h, instance, "complete", "errored")
        assert status == {"status": "complete", "output": "done", "error": None}

    run(test, max_steps=1)


def test_a_step_past_its_timeout_is_killed_with_its_sandbox_then_retried(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.FLAKY)
        instance = await create(h, "acme", "h", {"mode": "hang"})
        await settle(h, instance, "waiting")  # attempt 1 killed at 300 ms; retry in 10 ms
        clock.advance(0.01)
        status = await settle(h, instance, "errored")  # attempt 2 killed: limit 1 reached
        assert "SandboxTimeout" in status["error"]["message"]
        assert h.supervisor.stats()["evictions"]["deadline"] == 2

    run(test, clock=clock)


def test_the_step_limit_errors_the_instance(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.MANY_STEPS)
        instance = await create(h, "acme", "m", {"steps": 5})
        status = await settle(h, instance, "errored")
        assert status["error"]["name"] == "StepLimitError"

    run(test, max_steps=3)


# --- instance operations -------------------------------------------------------------------------


class Gate:
    """A host service a step blocks on until the test opens it."""

    opened: asyncio.Event | None = None

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def wait(self) -> str:
        assert Gate.opened is not None
        await Gate.opened.wait()
        return "first"


def deploy_gated(h: Harness) -> None:
    Gate.opened = asyncio.Event()
    h.deploy("acme", programs.GATED)
    plain = h.code

    def code(tenant: str, version: str) -> Any:
        base = plain(tenant, version)
        return type(base)(
            base.main_module, base.modules, env={**base.env, "GATE": h.supervisor.service(Gate)}
        )

    h.code = code  # type: ignore[method-assign]


def test_pause_takes_effect_after_the_current_step_and_resume_finishes(run: Run) -> None:
    async def test(h: Harness) -> None:
        deploy_gated(h)
        instance = await create(h, "acme", "p", {})
        await settle(h, instance, "running")
        await h.engine.pause(instance)
        assert (await h.engine.status(instance))["status"] == "waitingForPause"
        assert Gate.opened is not None
        Gate.opened.set()
        await settle(h, instance, "paused")
        assert [s.name for s in await h.engine.store.steps(instance)] == ["one"]
        await h.engine.resume(instance)
        assert (await settle(h, instance, "complete"))["output"] == ["first", "second"]

    run(test)


def test_terminate_stops_a_running_instance_and_records_nothing_more(run: Run) -> None:
    async def test(h: Harness) -> None:
        deploy_gated(h)
        instance = await create(h, "acme", "t", {})
        await settle(h, instance, "running")
        await h.engine.terminate(instance)
        assert Gate.opened is not None
        Gate.opened.set()
        await asyncio.sleep(0.2)
        assert (await h.engine.status(instance))["status"] == "terminated"
        assert await h.engine.store.steps(instance) == []
        with pytest.raises(InvalidTransition, match="terminated"):
            await h.engine.send_event(instance, "approval", 1)
        with pytest.raises(InvalidTransition, match="terminated"):
            await h.engine.pause(instance)

    run(test)


def test_pause_and_resume_a_sleeping_instance(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        instance = await create(h, "acme", "z", {"n": 2, "nap": 1000})
        await settle(h, instance, "waiting")
        await h.engine.pause(instance)
        clock.advance(5)
        await asyncio.sleep(0.1)
        assert (await h.engine.status(instance))["status"] == "paused"
        await h.engine.resume(instance)
        with pytest.raises(InvalidTransition, match="not paused"):
            await h.engine.resume(instance)
        await settle(h, instance, "complete")

    run(test, clock=clock)


def test_restart_from_scratch_and_from_a_named_step(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        instance = await create(h, "acme", "r", {"n": 3})
        await settle(h, instance, "complete")
        await h.engine.restart(instance, from_step="double")
        await settle(h, instance, "complete")
        assert (h.kv("acme", "runs:sum"), h.kv("acme", "runs:double")) == (1, 2)
        await h.engine.restart(instance)
        await settle(h, instance, "complete")
        assert (h.kv("acme", "runs:sum"), h.kv("acme", "runs:double")) == (2, 3)
        with pytest.raises(InvalidInput, match="no recorded do step 'nope'"):
            await h.engine.restart(instance, from_step="nope")
        # Cloudflare's form: {name, count, type}
        await h.engine.restart(instance, from_step={"name": "double", "count": 1, "type": "do"})
        await settle(h, instance, "complete")
        assert (h.kv("acme", "runs:sum"), h.kv("acme", "runs:double")) == (2, 4)
        for bad in ({"name": "double", "count": 0}, {"name": "x", "kind": "do"}, 3):
            with pytest.raises(InvalidInput, match="from_step is a step name"):
                await h.engine.restart(instance, from_step=bad)

    run(test)


def test_create_without_params_runs_with_an_empty_payload(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.ECHO)
        (created,) = await h.engine.create(
            "dynamic-workflow", [(None, {"__dispatcherMetadata": {"tenant_id": "acme"}})]
        )
        status = await settle(h, created, "complete", "errored")
        assert status["error"]["name"] == "MissingDispatcherMetadataError"  # no params: refused
        assert await h.fetch("acme", {"id": "e"}) == {"id": "e"}
        status = await settle(h, "acme/e", "complete", "errored")
        assert status["output"] == {}

    run(test)


def test_bad_ids_names_and_batches_are_refused_as_invalid(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.ECHO)
        stub = await h.stub("acme")
        entry = stub.get_entrypoint("Default")
        for method in ("get_bad", "delete_bad"):
            assert "is not valid" in await getattr(entry, method)()  # refused, not looked up
        assert "non-empty list" in await entry.empty_batch()
        with pytest.raises(InvalidInput, match="1-64 characters"):
            h.engine.register("x" * 65, WorkflowEntrypoint)
        with pytest.raises(InvalidInput, match="1-64 characters"):
            h.engine.register("-bad", WorkflowEntrypoint)
        await h.fetch("acme", {"id": "one"})
        await h.fetch("acme", {"id": "two"})
        await settle(h, "acme/two", "complete")
        assert await entry.delete_both() == 2
        with pytest.raises(InstanceNotFound):
            await h.engine.record("acme/one")

    run(test)


def test_delete_forgets_the_instance(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        instance = await create(h, "acme", "d", {"n": 3})
        await settle(h, instance, "complete")
        await h.engine.delete(instance)
        with pytest.raises(InstanceNotFound):
            await h.engine.status(instance)

    run(test)


# --- dynamic dispatch ----------------------------------------------------------------------------


def test_the_envelope_is_persisted_in_its_wire_format(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        await h.fetch("acme", {"id": "env", "params": {"n": 1}})
        record = await h.engine.store.get_instance("acme/env")
        assert msgspec.msgpack.decode(record.params) == {
            "__dispatcherMetadata": {"tenant_id": "acme"},
            "params": {"n": 1},
        }
        assert (record.tenant, record.workflow) == ("acme", "dynamic-workflow")

    run(test)


def test_a_tenant_sees_only_its_own_instances(run: Run) -> None:
    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        h.deploy("globex", programs.PIPELINE)
        await h.fetch("acme", {"id": "mine", "params": {"n": 1}})
        globex = (await h.stub("globex")).get_entrypoint()
        with pytest.raises(TenantError, match="no workflow instance 'mine'"):
            await globex.get_other("mine")
        # the same id in another tenant's namespace is another instance
        assert await h.fetch("globex", {"id": "mine", "params": {"n": 5}}) == {"id": "mine"}
        assert (await settle(h, "globex/mine", "complete"))["output"]["total"] == 10
        assert (await settle(h, "acme/mine", "complete"))["output"]["total"] == 0
        acme = (await h.stub("acme")).get_entrypoint()
        assert (await acme.status("mine"))["output"]["total"] == 0

    run(test)


def test_an_instance_without_the_envelope_errors_with_its_own_type(run: Run) -> None:
    async def test(h: Harness) -> None:
        instance = await h.workflow.create(id="bare", params={"n": 1})
        status = await settle(h, instance.id, "errored")
        assert status["error"]["name"] == "MissingDispatcherMetadataError"

    run(test)


@pytest.mark.parametrize("pinned", [True, False])
def test_a_pinned_instance_resumes_on_the_code_it_started_with(run: Run, pinned: bool) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        instance = await create(h, "acme", "pin", {"n": 2, "nap": 1000})
        await settle(h, instance, "waiting")
        h.deploy("acme", programs.PIPELINE_V2, version="v2")  # a redeploy while it sleeps
        clock.advance(1)
        output = (await settle(h, instance, "complete"))["output"]
        assert ("v" in output) is not pinned
        if pinned:
            assert h.loads[0][1] is None and h.loads[-1][1] is not None

    run(test, clock=clock, pin_versions=pinned)


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_gets_a_typed_error_and_leaves_other_instances_intact(run: Run) -> None:
    clock = ManualClock()

    async def test(h: Harness) -> None:
        h.deploy("acme", programs.PIPELINE)
        sleeper = await create(h, "acme", "keep", {"n": 2, "nap": 1000})
        await settle(h, sleeper, "waiting")
        workflow = h.workflow
        for bad in ("-x", "a/b", "x" * 101, "", "a b"):
            with pytest.raises(InvalidInput, match="instance id"):
                await workflow.create(id=bad)
        with pytest.raises(InvalidInput, match="1 MiB"):
            await workflow.create(params="x" * (1 << 20))
        with pytest.raises(InvalidInput, match=r"plain data|Encoding|unsupported"):
            await workflow.create(params={"f": object()})
        with pytest.raises(InstanceNotFound):
            await h.engine.status("nobody")
        with pytest.raises(InstanceNotFound):
            await h.engine.send_event("nobody", "approval")
        with pytest.raises(InvalidInput, match="event payload"):
            await h.engine.send_event(sleeper, "approval", b"x" * (1 << 20))
        with pytest.raises(InvalidInput, match="at most 100"):
            await workflow.create_batch([{} for _ in range(101)])
        await workflow.create(id="taken")
        with pytest.raises(InstanceExists):
            await workflow.create(id="taken")
        # the tenant's binding refuses an oversized payload as a tenant-visible error
        with pytest.raises(TenantError, match="1 MiB"):
            await h.fetch("acme", {"params": {"blob": "x" * (1 << 20)}})
        clock.advance(1)
        assert (await settle(h, sleeper, "complete"))["output"]["total"] == 1

    run(test, clock=clock)


def test_create_batch_skips_ids_that_exist(run: Run) -> None:
    async def test(h: Harness) -> None:
        await h.workflow.create(id="a")
        created = await h.workflow.create_batch([{"id": "a"}, {"id": "b"}, {"params": 1}])
        assert [i.id for i in created][:1] == ["b"] and len(created) == 2

    run(test)


async def create(h: Harness, tenant: str, local: str, params: Any) -> str:
    """Create an instance as the tenant's binding would, and return its engine id."""
    envelope = {"__dispatcherMetadata": {"tenant_id": tenant}, "params": params}
    (created,) = await h.engine.create(h.workflow.name, [(local, envelope)], tenant=tenant)
    return created
