"""Several sandboxes per busy tenant: no head-of-line blocking, the per-tenant cap, the two kinds
of call, LRU and idle eviction per sandbox, redeploys, stats and /metrics per tenant, and a
tenant's fetch that pauses its own workflow while that workflow's step runs.

Slow calls are held on a host service (`Gate`) that the test opens: every "while it runs" below
is an event the host saw, never a duration. Timeouts only guard against a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynworkers.loader import Binding, Limits, WorkerCode
from dynworkers.runtime import MemoryLimitExceeded, PoolBusy, Supervisor
from dynworkers.runtime.bindings import ServiceContext
from dynworkers.runtime.daemon.prometheus import DaemonMetrics
from tests.engine.harness import Harness
from tests.runtime.support import code, eventually, evictions
from tests.tenants import basic

HANG = 20.0  # seconds: only a guard against a hang, never a measurement

#: `whoami` names the sandbox: module-level state is per sandbox, and a sandbox's random
#: generator is seeded after its fork, so siblings differ.
HOLDER = """
import random

from workers import WorkerEntrypoint

ME = random.random()


class Default(WorkerEntrypoint):
    def hold(self, name, *granted):
        return self.env.GATE.hold(name)

    def ping(self):
        return "pong"

    def whoami(self):
        return ME

    def hoard(self, mib):
        HOARD.append("x" * (mib * 1024 * 1024))
        return len(HOARD)


HOARD = []
"""


class Gate:
    """A host service: `hold(name)` answers once the test opens `name`; the test sees each
    call arrive (`entered`), so it knows the call is running in a sandbox."""

    opened: ClassVar[dict[str, asyncio.Event]] = {}
    entered: ClassVar[dict[str, asyncio.Event]] = {}

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @classmethod
    def reset(cls) -> None:
        cls.opened, cls.entered = {}, {}

    @classmethod
    def event(cls, table: dict[str, asyncio.Event], name: str) -> asyncio.Event:
        return table.setdefault(name, asyncio.Event())

    async def hold(self, name: str) -> str:
        Gate.event(Gate.entered, name).set()
        await Gate.event(Gate.opened, name).wait()
        return name

    @classmethod
    async def running(cls, name: str) -> None:
        await asyncio.wait_for(cls.event(cls.entered, name).wait(), HANG)

    @classmethod
    def open(cls, name: str) -> None:
        cls.event(cls.opened, name).set()


class WakeUpLike(Binding):
    """A per-call grant of the kind the engine passes to a workflow's run: the call is a
    workflow wake-up for the pool."""

    kind = "step"


async def holder(
    sup: Supervisor, tenant: str, source: str = HOLDER, limits: Limits | None = None
) -> Any:
    stub = await sup.loader.get(
        tenant, lambda: code(source, env={"GATE": sup.service(Gate)}, limits=limits)
    )
    return stub.get_entrypoint()


def hold(entry: Any, name: str, *granted: Any) -> asyncio.Task[Any]:
    return asyncio.ensure_future(entry.hold(name, *granted))


def tenant_stats(sup: Supervisor, tenant: str) -> dict[str, int]:
    return dict(sup.stats()["tenants"].get(tenant, {}))


def test_a_fast_call_answers_while_the_same_tenants_slow_call_runs(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config()) as sup:
            entry = await holder(sup, "acme")
            slow = hold(entry, "slow")
            await Gate.running("slow")
            assert await asyncio.wait_for(entry.ping(), HANG) == "pong"
            assert not slow.done()  # the fast call answered while the slow one still ran
            assert tenant_stats(sup, "acme") == {"sandboxes": 2, "busy": 1, "queued": 0}
            second = await entry.whoami()
            Gate.open("slow")
            assert await slow == "slow"
            assert len(set(sup.sandbox_pids("acme"))) == 2
            assert sup.stats()["scale_outs"] == 1
            # the most recently released sandbox serves next: the first one, whose module-level
            # state is its own
            assert await entry.whoami() != second

    asyncio.run(main())


def test_the_call_past_the_tenants_cap_queues_until_one_of_its_sandboxes_is_free(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        # a cap of 3: requests may keep 2 busy, one is left for workflow wake-ups
        async with Supervisor(config(max_sandboxes_per_tenant=3)) as sup:
            entry = await holder(sup, "acme")
            first, second = hold(entry, "first"), hold(entry, "second")
            await Gate.running("first")
            await Gate.running("second")
            third = hold(entry, "third")
            await eventually(lambda: tenant_stats(sup, "acme").get("queued") == 1, what="queued")
            assert tenant_stats(sup, "acme") == {"sandboxes": 2, "busy": 2, "queued": 1}
            assert not Gate.event(Gate.entered, "third").is_set()
            assert sup.stats()["queued"] == 1
            Gate.open("first")
            assert await first == "first"
            await Gate.running("third")  # it took the sandbox the first call released
            assert len(sup.sandbox_pids("acme")) == 2
            Gate.open("second")
            Gate.open("third")
            assert await asyncio.gather(second, third) == ["second", "third"]
            assert sup.stats()["pool"]["size"] == 2

    asyncio.run(main())


def test_a_wake_up_never_waits_behind_the_tenants_requests_nor_the_reverse(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(max_sandboxes_per_tenant=2)) as sup:
            entry = await holder(sup, "acme")
            request = hold(entry, "request")  # a cap of 2: requests may keep 1 busy
            await Gate.running("request")
            queued = hold(entry, "queued")
            await eventually(lambda: tenant_stats(sup, "acme").get("queued") == 1, what="queued")
            wake_up = hold(entry, "wake-up", WakeUpLike())
            await Gate.running("wake-up")  # it did not queue behind the requests
            assert not Gate.event(Gate.entered, "queued").is_set()
            # the reverse: with the wake-up kind at its share, a request still runs
            Gate.open("request")
            await Gate.running("queued")
            assert tenant_stats(sup, "acme") == {"sandboxes": 2, "busy": 2, "queued": 0}
            for name in ("queued", "wake-up"):
                Gate.open(name)
            assert await asyncio.gather(request, queued, wake_up) == [
                "request",
                "queued",
                "wake-up",
            ]

    asyncio.run(main())


def test_capacity_eviction_takes_the_least_recently_used_sandbox_of_a_busy_tenant(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(max_sandboxes=3, max_sandboxes_per_tenant=3)) as sup:
            entry = await holder(sup, "a")
            first, second = hold(entry, "first"), hold(entry, "second")
            await Gate.running("first")
            await Gate.running("second")
            Gate.open("first")
            await first
            Gate.open("second")
            await second
            b = await holder(sup, "b")
            assert await b.ping() == "pong"
            recent = await entry.whoami()  # one of a's sandboxes is now the most recently used
            c = await holder(sup, "c")
            assert await c.ping() == "pong"  # the pool is full: one sandbox must go
            assert evictions(sup, "capacity") == 1
            assert len(sup.sandbox_pids("a")) == 1  # a's least recently used went, not b's
            assert sup.sandbox_pid("b") is not None
            assert await entry.whoami() == recent

    asyncio.run(main())


def test_an_idle_extra_sandbox_ends_after_its_ttl_while_its_sibling_is_busy(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(idle_ttl=0.2, sweep_interval=0.05)) as sup:
            entry = await holder(sup, "acme")
            long, short = hold(entry, "long"), hold(entry, "short")
            await Gate.running("long")
            await Gate.running("short")
            Gate.open("short")
            await short
            await eventually(lambda: evictions(sup, "idle") == 1, what="an idle eviction")
            assert not long.done()
            # the busy one was kept
            assert tenant_stats(sup, "acme") == {"sandboxes": 1, "busy": 1, "queued": 0}
            Gate.open("long")
            assert await long == "long"

    asyncio.run(main())


def test_the_memory_ceiling_ends_only_the_sandbox_over_it(config: Callable[..., Any]) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(sweep_interval=0.05)) as sup:
            entry = await holder(sup, "acme", limits=Limits(memory_mb=64))
            pinned = hold(entry, "pinned")
            await Gate.running("pinned")
            # in a second sandbox (the first is busy); the watch of busy sandboxes may catch it
            # during the call, or the idle sweep after it
            with contextlib.suppress(MemoryLimitExceeded):
                assert await entry.hoard(128) == 1
            await eventually(lambda: evictions(sup, "memory") == 1, what="a memory eviction")
            assert tenant_stats(sup, "acme") == {"sandboxes": 1, "busy": 1, "queued": 0}
            Gate.open("pinned")
            assert await pinned == "pinned"
            assert await entry.hoard(1) == 1  # the sandbox that was kept never hoarded

    asyncio.run(main())


def test_a_redeploy_retires_every_sandbox_of_the_old_version(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config()) as sup:
            old = await holder(sup, "acme")
            idle, busy = hold(old, "idle"), hold(old, "busy")
            await Gate.running("idle")
            await Gate.running("busy")
            Gate.open("idle")
            await idle
            old_pids = set(sup.sandbox_pids("acme"))
            assert len(old_pids) == 2
            assert sup.loader.forget("acme")
            new = await holder(sup, "acme", HOLDER + "\nVERSION = 2\n")
            assert await new.ping() == "pong"
            assert evictions(sup, "redeploy") == 1  # the idle one at once
            assert not busy.done()  # the busy one finishes its call first
            Gate.open("busy")
            assert await busy == "busy"
            assert evictions(sup, "redeploy") == 2
            assert not old_pids & set(sup.sandbox_pids("acme"))
            assert len(sup.sandbox_pids("acme")) == 1

    asyncio.run(main())


def test_evict_ends_every_sandbox_of_the_tenant(config: Callable[..., Any]) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config()) as sup:
            entry = await holder(sup, "acme")
            first, second = hold(entry, "first"), hold(entry, "second")
            await Gate.running("first")
            await Gate.running("second")
            assert sup.evict("acme") is True
            results = await asyncio.gather(first, second, return_exceptions=True)
            assert all(isinstance(r, Exception) for r in results)
            assert sup.sandbox_pid("acme") is None and sup.sandbox_pids("acme") == []
            assert evictions(sup, "manual") == 2
            assert sup.evict("acme") is False
            assert await entry.ping() == "pong"

    asyncio.run(main())


def test_metrics_show_each_tenants_sandboxes_and_queued_calls(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(max_sandboxes_per_tenant=2)) as sup:
            metrics = DaemonMetrics(sup)
            entry = await holder(sup, "acme")
            calm = await sup.loader.get("calm", lambda: code(basic.CLOCK))
            assert await calm.get_entrypoint().ping() == "pong"
            first = hold(entry, "first")
            await Gate.running("first")
            second = hold(entry, "second")
            await eventually(lambda: tenant_stats(sup, "acme").get("queued") == 1, what="queued")
            body, _ = await metrics.render()
            samples = {
                (sample.name, sample.labels.get("tenant")): sample.value
                for family in text_string_to_metric_families(body.decode())
                for sample in family.samples
            }
            assert samples[("dynworkers_tenant_sandboxes", "acme")] == 1
            assert samples[("dynworkers_tenant_calls_queued", "acme")] == 1
            assert samples[("dynworkers_tenant_sandboxes", "calm")] == 1
            assert samples[("dynworkers_tenant_calls_queued", "calm")] == 0
            assert samples[("dynworkers_pool_sandboxes", None)] == 2
            Gate.open("first")
            Gate.open("second")
            assert await asyncio.gather(first, second) == ["first", "second"]

    asyncio.run(main())


# --- a tenant's fetch and its own running workflow -------------------------------------------

PAUSER = """
from workers import WorkerEntrypoint, WorkflowEntrypoint, Response


class Default(WorkerEntrypoint):
    def fetch(self, request):
        body = request.json()
        if "pause" in body:
            self.env.WORKFLOWS.get(body["pause"]).pause()
            return Response.json({"paused": body["pause"]})
        instance = self.env.WORKFLOWS.create(id=body["id"], params={})
        return Response.json({"id": instance.id})


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        first = step.do("held", lambda: self.env.GATE.hold("step"))
        second = step.do("after", lambda: "after")
        return [first, second]
"""


def test_a_tenants_fetch_pauses_its_own_workflow_while_the_workflows_step_runs(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Harness(config()) as h:
            h.deploy("acme", PAUSER)
            plain = h.code

            def gated(tenant: str, version: str) -> WorkerCode:
                base = plain(tenant, version)
                env = {**base.env, "GATE": h.supervisor.service(Gate)}
                return WorkerCode(base.main_module, base.modules, env=env)

            h.code = gated  # type: ignore[method-assign]
            assert await h.fetch("acme", {"id": "job"}) == {"id": "job"}
            await Gate.running("step")  # the workflow's step is running in a sandbox
            answer = await asyncio.wait_for(h.fetch("acme", {"pause": "job"}), HANG)
            assert answer == {"paused": "job"}
            # the fetch answered before the step ended: the step is still held open
            assert not Gate.event(Gate.opened, "step").is_set()
            assert (await h.engine.status("acme/job"))["status"] == "waitingForPause"
            Gate.open("step")
            await h.wait_for("acme/job", "paused")
            await h.engine.resume("acme/job")
            status = await h.wait_for("acme/job", "complete")
            assert status["output"] == ["step", "after"]

    asyncio.run(main())


def test_a_call_queued_while_the_tenants_sandboxes_end_starts_one_the_tenant_keeps(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(max_sandboxes_per_tenant=1)) as sup:
            entry = await holder(sup, "acme")
            running = hold(entry, "running")
            await Gate.running("running")
            queued = asyncio.ensure_future(entry.ping())
            await eventually(lambda: tenant_stats(sup, "acme").get("queued") == 1, what="queued")
            assert sup.evict("acme")
            assert isinstance((await asyncio.gather(running, return_exceptions=True))[0], Exception)
            assert await queued == "pong"  # it started the tenant's next sandbox
            assert len(sup.sandbox_pids("acme")) == 1  # listed as the tenant's, and the only one
            assert await entry.ping() == "pong"
            assert sup.stats()["pool"]["size"] == 1

    asyncio.run(main())


def test_the_per_tenant_cap_is_bounded_by_max_sandboxes(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(max_sandboxes=2, max_sandboxes_per_tenant=8)) as sup:
            assert sup.stats()["pool"]["max_sandboxes_per_tenant"] == 2

    asyncio.run(main())


class LongDeadline(Binding):
    """A per-call grant that gives its call a long deadline (as the engine's step binding gives
    a step its timeout), so that only the queued call's short deadline can pass."""

    def granted(self, control: Any) -> None:
        control.set_deadline(HANG)


def test_a_call_that_waits_its_whole_deadline_in_the_queue_does_not_run(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(max_sandboxes_per_tenant=1)) as sup:
            entry = await holder(sup, "acme", limits=Limits(deadline=0.3))
            running = hold(entry, "running", LongDeadline())
            await Gate.running("running")
            with pytest.raises(PoolBusy, match="did not run"):
                await entry.hold("queued")
            assert not Gate.event(Gate.entered, "queued").is_set()
            assert tenant_stats(sup, "acme") == {"sandboxes": 1, "busy": 1, "queued": 0}
            assert sup.stats()["evictions"]["deadline"] == 0  # busy is not broken
            Gate.open("running")
            assert await running == "running"
            assert sup.evict("acme")
            assert "acme" not in sup.stats()["tenants"]  # nothing left of it

    asyncio.run(main())


def test_a_scale_out_never_evicts_a_sandbox_that_was_just_released(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(max_sandboxes=3, max_sandboxes_per_tenant=3)) as sup:
            a, c = await holder(sup, "a"), await holder(sup, "c")
            assert await a.ping() == "pong" and await c.ping() == "pong"  # both idle now
            b = await holder(sup, "b")
            first = hold(b, "first")
            await Gate.running("first")  # the pool is full: a and c idle, b busy
            second = hold(b, "second")  # b may grow, but only by evicting a or c
            await eventually(lambda: tenant_stats(sup, "b")["queued"] == 1, HANG, "b queues")
            assert evictions(sup, "capacity") == 0
            assert len(sup.sandbox_pids("b")) == 1
            Gate.open("first")
            Gate.open("second")
            assert await first == "first" and await second == "second"
            assert sup.sandbox_pid("a") is not None and sup.sandbox_pid("c") is not None
            d = await holder(sup, "d")  # a tenant with none still takes the LRU idle one
            assert await d.ping() == "pong"
            assert evictions(sup, "capacity") == 1 and sup.sandbox_pid("a") is None

    asyncio.run(main())


def test_a_queued_scale_out_starts_once_an_idle_sandbox_is_old_enough_to_evict(
    config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule above delays a scale-out, never turns it into a wait for the tenant's own slow
    call: the queued call is looked at again when another tenant's idle sandbox passes the age."""
    from dynworkers.runtime import pool as pool_module

    monkeypatch.setattr(pool_module, "SCALE_OUT_EVICTS_IDLE_S", 0.3)

    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(max_sandboxes=3, max_sandboxes_per_tenant=3)) as sup:
            a, c = await holder(sup, "a"), await holder(sup, "c")
            assert await a.ping() == "pong" and await c.ping() == "pong"
            b = await holder(sup, "b")
            first = hold(b, "first")
            await Gate.running("first")  # the pool is full: a and c idle, b busy
            second = hold(b, "second")
            await Gate.running("second")  # while "first" still holds b's first sandbox
            assert len(sup.sandbox_pids("b")) == 2
            assert evictions(sup, "capacity") == 1
            Gate.open("first")
            Gate.open("second")
            assert await first == "first" and await second == "second"

    asyncio.run(main())


def test_a_call_woken_by_an_eviction_joins_the_tenant_s_new_sandboxes_not_a_forgotten_set(
    config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the call of an evicted sandbox ends, the pool wakes the calls queued for the tenant
    and forgets its emptied set of sandboxes. A call that arrives before those wake gets a new
    set; the woken calls must join it, not start sandboxes in the forgotten set: those would be
    past the tenant's cap, and invisible to `evict` and `sandbox_pids`. The fault injected: the
    new call's first step is queued just before the release that wakes the others."""
    from dynworkers.runtime.pool import Pool

    async def main() -> None:
        Gate.reset()
        async with Supervisor(config(max_sandboxes=4, max_sandboxes_per_tenant=1)) as sup:
            b = await holder(sup, "b")
            tasks: dict[str, asyncio.Task[Any]] = {}
            release = Pool.release

            def release_after_a_newcomer(pool: Pool, handle: Any) -> None:
                if not handle.alive and "third" not in tasks:
                    tasks["third"] = hold(b, "third")
                release(pool, handle)

            monkeypatch.setattr(Pool, "release", release_after_a_newcomer)
            first = hold(b, "first")
            await Gate.running("first")
            tasks["second"] = hold(b, "second")
            await eventually(lambda: tenant_stats(sup, "b")["queued"] == 1, HANG, "b queues")
            assert sup.evict("b")
            with pytest.raises(Exception, match="evicted"):
                await first

            def one_running() -> bool:
                entered = [Gate.event(Gate.entered, name).is_set() for name in tasks]
                return any(entered)

            await eventually(one_running, HANG, "a queued call runs")
            await asyncio.sleep(0.2)  # a second, unseen sandbox would have started by now
            live = [h for h in sup.pool.handles.values() if h.tenant_id == "b" and h.alive]
            assert len(live) == 1, [h.id for h in live]  # the cap holds
            assert sup.sandbox_pids("b") == [live[0].pid]  # and evict() can see it
            Gate.open("second")
            Gate.open("third")
            assert {await tasks["second"], await tasks["third"]} == {"second", "third"}

    asyncio.run(main())
