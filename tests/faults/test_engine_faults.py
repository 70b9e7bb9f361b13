"""The engine under injected faults: a store that stalls between two writes, a store that fails,
a full disk (a real tmpfs), and a terminate or delete that races a running wake-up.

Real sandboxes and a real SQLite file; the faults are injected by a store subclass (a stall or
an error at a chosen write) or by the kernel (a tmpfs that is full). No timing is asserted: every
wait polls for a state, with a timeout that only guards against a hang.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dynworkers.engine import EventRecord, ManualClock, StepRecord, StoreError
from dynworkers.engine.sqlite_store import SQLiteStore
from tests.engine.harness import Harness
from tests.faults.support import tmpfs

WAITER = """
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        got = step.wait_for_event("approve", "approval", timeout="1 hour")
        return {"approved": got.payload}
"""

COUNTED = """
from workers import WorkflowEntrypoint


def bump(env, key):
    n = (env.KV.get(key) or 0) + 1
    env.KV.put(key, n)
    return n


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        size = event.payload.get("size", 10)
        first = step.do("first", lambda: bump(self.env, "runs:first") and "x" * size)
        second = step.do("second", lambda: bump(self.env, "runs:second"))
        return {"first": len(first), "second": second}
"""

SELF_TERMINATING = """
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class Default(WorkerEntrypoint):
    def fetch(self, request):
        return Response.json({"id": self.env.WORKFLOWS.create(id="t").id})


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        step.do("before", lambda: self.env.KV.put("before", True) or 1)
        self.env.WORKFLOWS.get(event.instance_id).{operation}()
        self.env.KV.put("after-binding", True)
        step.do("after", lambda: self.env.KV.put("after-step", True) or 1)
        return "not reached"
"""

BUSY_STEP = """
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        def spin():
            n = 0
            while True:
                n += 1
                self.env.KV.put("ticks", n)

        step.do("spin", spin, config={"timeout": "1 hour", "retries": {"limit": 1}})
        self.env.KV.put("after", True)
        return "not reached"
"""


class FaultyStore(SQLiteStore):
    """SQLite with a hook on the session's writes: stall (until `release` is set) or fail."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.stall_wait: str | None = None  # "before" or "after" the wait is recorded
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()
        self.fail_step_writes: set[str] = set()  # step names whose complete write fails once

    async def wait_for_event(
        self,
        pending: StepRecord,
        type: str,
        encode: Callable[[EventRecord], bytes],
        *,
        generation: int | None = None,
        **fields: object,
    ) -> EventRecord | None:
        if self.stall_wait == "before":
            self.stalled.set()
            await self.release.wait()
        event = await super().wait_for_event(pending, type, encode, generation=generation, **fields)
        if self.stall_wait == "after":
            self.stalled.set()
            await self.release.wait()
        return event

    async def record(
        self,
        step: StepRecord | None,
        instance_id: str,
        *,
        generation: int | None = None,
        **fields: object,
    ) -> None:
        if step is not None and step.status == "complete" and step.name in self.fail_step_writes:
            self.fail_step_writes.discard(step.name)
            raise StoreError("write failed: database or disk is full (injected)")
        await super().record(step, instance_id, generation=generation, **fields)


def _run(config: Callable[..., Any], test: Callable[[Harness, FaultyStore], Any], **opts: Any):
    async def main() -> None:
        store = FaultyStore(Path(config().state_dir) / "engine.db")
        async with Harness(config(), store=store, **opts) as harness:
            await test(harness, store)

    asyncio.run(main())


@pytest.mark.parametrize("stall", ["before", "after"])
def test_an_event_sent_while_the_wait_is_being_recorded_wakes_the_instance(
    config: Callable[..., Any], stall: str
) -> None:
    """No lost wake-up: the clock never moves, so only the event can complete the instance."""

    async def test(h: Harness, store: FaultyStore) -> None:
        store.stall_wait = stall
        h.deploy("acme", WAITER)
        await h.workflow.create(
            id="w", params={"__dispatcherMetadata": {"tenant_id": "acme"}, "params": {}}
        )
        await asyncio.wait_for(store.stalled.wait(), 20)
        await h.engine.send_event("w", "approval", {"by": "ana"})
        store.stall_wait = None
        store.release.set()
        status = await h.wait_for("w", "complete", "errored")
        assert status["output"] == {"approved": {"by": "ana"}}

    _run(config, test, clock=ManualClock())


def test_a_step_whose_result_did_not_commit_runs_again_and_the_instance_is_not_errored(
    config: Callable[..., Any],
) -> None:
    async def test(h: Harness, store: FaultyStore) -> None:
        store.fail_step_writes = {"first"}
        h.deploy("acme", COUNTED)
        await h.workflow.create(
            id="c", params={"__dispatcherMetadata": {"tenant_id": "acme"}, "params": {}}
        )
        status = await h.wait_for("c", "complete", "errored")
        assert status["status"] == "complete", status
        assert status["output"] == {"first": 10, "second": 1}
        assert h.kv("acme", "runs:first") == 2  # at least once: the attempt that did not commit
        assert h.kv("acme", "runs:second") == 1
        assert h.engine.stats()["store_failures"] == 1

    _run(config, test)


@pytest.mark.parametrize("operation", ["terminate", "delete"])
def test_terminate_or_delete_inside_run_stops_every_later_step_and_binding_call(
    config: Callable[..., Any], operation: str
) -> None:
    async def test(h: Harness, store: FaultyStore) -> None:
        h.deploy("acme", SELF_TERMINATING.replace("{operation}", operation))
        assert await h.fetch("acme") == {"id": "t"}
        if operation == "terminate":
            await h.wait_for("acme/t", "terminated")
        else:
            await _gone(h, "acme/t")
        await _idle(h)
        assert h.kv("acme", "before") is True
        assert h.kv("acme", "after-binding") is None
        assert h.kv("acme", "after-step") is None

    _run(config, test)


def test_terminate_sent_while_a_step_runs_stops_the_step_and_the_run(
    config: Callable[..., Any],
) -> None:
    async def test(h: Harness, store: FaultyStore) -> None:
        h.deploy("acme", BUSY_STEP)
        await h.workflow.create(
            id="b", params={"__dispatcherMetadata": {"tenant_id": "acme"}, "params": {}}
        )
        for _ in range(2000):
            if h.kv("acme", "ticks"):
                break
            await asyncio.sleep(0.01)
        await h.engine.terminate("b")
        await _idle(h)
        ticks = h.kv("acme", "ticks")
        await asyncio.sleep(0.3)  # a run that went on would tick meanwhile
        assert h.kv("acme", "ticks") == ticks
        assert h.kv("acme", "after") is None
        assert (await h.engine.status("b"))["status"] == "terminated"

    _run(config, test)


async def _gone(h: Harness, instance_id: str) -> None:
    from dynworkers.engine import InstanceNotFound

    for _ in range(2000):
        try:
            await h.engine.record(instance_id)
        except InstanceNotFound:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{instance_id} was never deleted")


async def _idle(h: Harness) -> None:
    """Until no wake-up runs: a fenced one has ended."""
    for _ in range(2000):
        if not h.engine.scheduler.running:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a wake-up kept running")


# --- a full disk: a real tmpfs -------------------------------------------------------------------


def _fill(directory: Path, leave_kb: int) -> Path:
    filler = directory / "filler"
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize - leave_kb * 1024
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free, 0))
    return filler


def test_a_full_disk_stalls_the_instance_without_erroring_it_and_it_continues_after(
    config: Callable[..., Any], tmp_path: Path
) -> None:
    """The issue's case: an 800 KB step result on a nearly full disk."""
    with tmpfs(tmp_path / "disk", "4096k") as disk:

        async def main() -> None:
            store = SQLiteStore(disk / "engine.db")
            async with Harness(config(), store=store) as h:
                h.deploy("acme", COUNTED)
                await h.workflow.create(
                    id="big",
                    params={
                        "__dispatcherMetadata": {"tenant_id": "acme"},
                        "params": {"size": 800_000},
                    },
                )
                # the instance exists on disk; now leave no room for its first step's result
                await asyncio.sleep(0)
                filler = _fill(disk, 64)
                for _ in range(3000):
                    if h.engine.stats()["store_failures"] >= 2:
                        break
                    await asyncio.sleep(0.01)
                assert h.engine.stats()["store_failures"] >= 2
                status = await h.engine.status("big")
                assert status["status"] in ("queued", "running"), status
                filler.unlink()
                status = await h.wait_for("big", "complete", "errored", timeout=60)
                assert status["status"] == "complete", status
                assert status["output"] == {"first": 800_000, "second": 1}

        asyncio.run(main())


WAITS_FOR_GO = """
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        def until_go():
            while not self.env.KV.get("go"):
                pass
            return "went"

        return step.do("gate", until_go, config={"timeout": "1 minute"})
"""


def test_a_late_fence_notice_never_stops_the_wake_up_that_began_after_it(
    config: Callable[..., Any],
) -> None:
    """A restart's notice can reach a host after the restarted instance's new wake-up began
    (LISTEN/NOTIFY delivers it to every host, the sender too): it carries the generation it
    fenced, and a newer wake-up goes on."""

    async def test(h: Harness, store: FaultyStore) -> None:
        h.deploy("acme", WAITS_FOR_GO)
        envelope = {"__dispatcherMetadata": {"tenant_id": "acme"}, "params": {}}
        (instance,) = await h.engine.create("dynamic-workflow", [("late", envelope)])
        for _ in range(2000):  # the first wake-up runs its step
            if instance in h.engine._sessions:
                break
            await asyncio.sleep(0.01)
        first = h.engine._sessions[instance].generation  # its claim's
        await h.engine.restart(instance)
        fenced = first + 1  # the restart's; the next claim moves it on again
        for _ in range(2000):  # the new wake-up has claimed it, past the fenced generation
            session = h.engine._sessions.get(instance)
            if session is not None and session.generation > fenced:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the restarted instance never ran again")
        h.engine._on_notice(f"fence {instance} {fenced}")  # the restart's notice, late
        assert not session.stale
        h.supervisor.kv("kv").store.put("acme@v1", "kv", "go", True)
        status = await h.wait_for(instance, "complete", "errored")
        assert status["output"] == "went"

    _run(config, test)
