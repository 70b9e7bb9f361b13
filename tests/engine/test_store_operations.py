"""The store contract for the composite operations: each is one transaction, all or nothing.

`record`, `wait_for_event`, `deliver_event`, `restart`, `unfinished`, the per-minute metrics,
and the schema migration of an older database file. Written like `test_store_contract.py`:
every backend in `backends` must pass; the migration test is SQLite's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dynworkers.engine import EventRecord, InstanceNotFound, InstanceRecord, StepRecord, Store
from dynworkers.engine.errors import InvalidTransition
from dynworkers.engine.sqlite_store import MIGRATIONS, SQLiteStore
from dynworkers.engine.store import StaleGeneration
from tests.engine.test_store_contract import backend, pytest_generate_tests, run_with_store
from tests.engine.test_store_contract import record as instance

__all__ = ["backend", "pytest_generate_tests"]  # the contract's backends, one run each


def step(instance_id: str, position: int, status: str = "complete", **fields: Any) -> StepRecord:
    base: dict[str, Any] = dict(
        instance_id=instance_id,
        position=position,
        kind="do",
        name=f"s{position}",
        occurrence=0,
        status=status,
    )
    base.update(fields)
    return StepRecord(**base)


def encode(event: EventRecord) -> bytes:
    return b"event:" + event.type.encode() + b":" + event.payload


# --- record --------------------------------------------------------------------------------------


def test_record_writes_the_step_and_the_instance_fields_together(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a")])
        await store.record(step("a", 0, result=b"\x01"), "a", status="running", updated=2.0)
        assert [(s.position, s.status, s.result) for s in await store.steps("a")] == [
            (0, "complete", b"\x01")
        ]
        got = await store.get_instance("a")
        assert (got.status, got.updated) == ("running", 2.0)

    run_with_store(tmp_path, body)


def test_record_with_only_a_step_or_only_fields_writes_just_that(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a")])
        await store.record(step("a", 0), "a")
        assert (await store.get_instance("a")).status == "queued"
        await store.record(None, "a", status="waiting", wake_at=9.0, waiting_for="approval")
        got = await store.get_instance("a")
        assert (got.status, got.wake_at, got.waiting_for) == ("waiting", 9.0, "approval")
        assert len(await store.steps("a")) == 1

    run_with_store(tmp_path, body)


def test_record_whose_instance_update_fails_leaves_the_step_unwritten(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a")])
        with pytest.raises(InstanceNotFound):
            await store.record(step("ghost", 0), "ghost", status="running")
        assert await store.steps("ghost") == []
        # a step for a real instance, but the update names another that does not exist
        with pytest.raises(InstanceNotFound):
            await store.record(step("a", 0), "ghost", status="running")
        assert await store.steps("a") == []
        assert (await store.get_instance("a")).status == "queued"

    run_with_store(tmp_path, body)


def test_record_replaces_a_pending_step_by_its_next_state(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a")])
        await store.record(step("a", 0, "pending", attempts=1, wake_at=5.0), "a")
        await store.record(step("a", 0, "complete", attempts=2, result=b"ok"), "a")
        (only,) = await store.steps("a")
        assert (only.status, only.attempts, only.result, only.wake_at) == (
            "complete",
            2,
            b"ok",
            None,
        )

    run_with_store(tmp_path, body)


# --- wait_for_event -----------------------------------------------------------------------------


def test_wait_for_event_takes_the_oldest_of_the_type_and_completes_the_step(
    tmp_path: Path,
) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a")])
        await store.add_event("a", "approval", b"first", 1.0)
        await store.add_event("a", "other", b"x", 2.0)
        await store.add_event("a", "approval", b"second", 3.0)
        pending = step("a", 0, "pending", kind="wait_for_event", name="wait", attempts=1)
        event = await store.wait_for_event(pending, "approval", encode)
        assert event is not None
        assert (event.instance_id, event.type, event.payload, event.timestamp) == (
            "a",
            "approval",
            b"first",
            1.0,
        )
        (written,) = await store.steps("a")
        assert written == StepRecord(
            "a",
            0,
            "wait_for_event",
            "wait",
            0,
            "complete",
            result=b"event:approval:first",
            attempts=1,
        )
        later = await store.take_event("a", "approval")
        assert later is not None and later.payload == b"second"
        assert await store.take_event("a", "other") is not None

    run_with_store(tmp_path, body)


def test_wait_for_event_records_the_wait_when_no_event_of_the_type_is_buffered(
    tmp_path: Path,
) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a")])
        await store.add_event("a", "other", b"x", 1.0)
        pending = step("a", 0, "pending", kind="wait", name="wait", wake_at=50.0)
        fields = {"status": "waiting", "wake_at": 50.0, "waiting_for": "approval"}
        assert await store.wait_for_event(pending, "approval", encode, **fields) is None
        assert await store.steps("a") == [pending]
        got = await store.get_instance("a")
        assert (got.status, got.wake_at, got.waiting_for) == ("waiting", 50.0, "approval")
        assert await store.take_event("a", "other") is not None

    run_with_store(tmp_path, body)


def test_an_event_delivered_right_after_the_wait_is_recorded_wakes_the_instance(
    tmp_path: Path,
) -> None:
    """No lost wake-up: "none buffered" and "waiting for it" are one transaction, so an event
    sent concurrently is either taken by the wait or finds the instance waiting."""

    async def body(store: Store) -> None:
        await store.create_instances([instance("a"), instance("b")])
        fields = {"status": "waiting", "wake_at": 50.0, "waiting_for": "approval"}
        for instance_id, deliver_first in (("a", True), ("b", False)):
            pending = step(instance_id, 0, "pending", kind="wait", name="wait", wake_at=50.0)
            wait = store.wait_for_event(pending, "approval", encode, **fields)
            deliver = store.deliver_event(instance_id, "approval", b"ok", 2.0, 2.0)
            if deliver_first:
                woke, event = await asyncio.gather(deliver, wait)
                assert not woke and event is not None  # buffered, then taken by the wait
            else:
                event, woke = await asyncio.gather(wait, deliver)
                assert event is None and woke  # waiting, then woken by the event
                assert (await store.get_instance(instance_id)).status == "queued"

    run_with_store(tmp_path, body)


def test_fenced_writes_with_an_old_generation_write_nothing(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a"), instance("b")])
        assert (await store.get_instance("a")).generation == 0
        await store.record(step("a", 0), "a", generation=0, status="waiting", wake_at=5.0)
        assert await store.fence("a", status="terminated", wake_at=None) == 1
        with pytest.raises(StaleGeneration):
            await store.record(step("a", 1), "a", generation=0, status="complete")
        pending = step("a", 1, "pending", kind="wait", name="wait")
        with pytest.raises(StaleGeneration):
            await store.wait_for_event(pending, "t", encode, generation=0, status="waiting")
        got = await store.get_instance("a")
        assert (got.status, got.generation) == ("terminated", 1)
        assert [s.position for s in await store.steps("a")] == [0]
        await store.record(None, "a", generation=1, updated=9.0)  # the current one writes
        await store.restart("a", 0, 10.0)
        assert (await store.get_instance("a")).generation == 2
        await store.delete_instance("b")
        with pytest.raises(StaleGeneration):
            await store.record(None, "b", generation=0, status="complete")
        with pytest.raises(InstanceNotFound):
            await store.fence("b", status="terminated")

    run_with_store(tmp_path, body)


def test_a_step_alone_with_an_old_generation_writes_neither_step_nor_history(
    tmp_path: Path,
) -> None:
    """A running wake-up's step (no instance fields): SQLite fences it inside the step's own
    insert; it must refuse exactly as the two-statement form did."""

    async def body(store: Store) -> None:
        await store.create_instances([instance("a")])
        row = (1.0, "attempt", b"\x80")
        await store.record(step("a", 0), "a", generation=0, history=[row])
        await store.record(step("a", 0, attempts=2), "a", generation=0, history=[row, row])
        assert [(s.position, s.attempts) for s in await store.steps("a")] == [(0, 2)]
        assert [h.seq for h in await store.history("a")] == [1, 2, 3]
        await store.fence("a", status="terminated")
        with pytest.raises(StaleGeneration):
            await store.record(step("a", 1), "a", generation=0, history=[row])
        await store.delete_instance("a")
        with pytest.raises(StaleGeneration):  # no instance: no generation to match
            await store.record(step("a", 1), "a", generation=0, history=[row])
        assert await store.steps("a") == [] and await store.history("a") == []

    run_with_store(tmp_path, body)


def test_wait_for_event_whose_encode_fails_keeps_the_event_and_writes_no_step(
    tmp_path: Path,
) -> None:
    def broken(event: EventRecord) -> bytes:
        raise RuntimeError("cannot encode")

    async def body(store: Store) -> None:
        await store.create_instances([instance("a")])
        await store.add_event("a", "approval", b"1", 1.0)
        pending = step("a", 0, "pending", kind="wait_for_event", name="wait")
        with pytest.raises(RuntimeError, match="cannot encode"):
            await store.wait_for_event(pending, "approval", broken)
        assert await store.steps("a") == []
        kept = await store.take_event("a", "approval")
        assert kept is not None and kept.payload == b"1"

    run_with_store(tmp_path, body)


# --- deliver_event -------------------------------------------------------------------------------


def test_deliver_event_buffers_events_in_order(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a", status="running")])
        for n in range(3):
            woke = await store.deliver_event("a", "tick", str(n).encode(), float(n), 10.0)
            assert woke is False
        taken = [await store.take_event("a", "tick") for _ in range(3)]
        assert [e.payload for e in taken if e is not None] == [b"0", b"1", b"2"]
        assert await store.take_event("a", "tick") is None
        assert (await store.get_instance("a")).status == "running"

    run_with_store(tmp_path, body)


def test_deliver_event_wakes_an_instance_waiting_for_that_type(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances(
            [instance("a", status="waiting", wake_at=100.0, waiting_for="approval")]
        )
        assert await store.deliver_event("a", "approval", b"yes", 5.0, 6.0) is True
        got = await store.get_instance("a")
        assert (got.status, got.wake_at, got.waiting_for, got.updated) == (
            "queued",
            None,
            None,
            6.0,
        )
        event = await store.take_event("a", "approval")
        assert event is not None and (event.payload, event.timestamp) == (b"yes", 5.0)

    run_with_store(tmp_path, body)


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "waiting", "waiting_for": "other", "wake_at": 100.0},
        {"status": "waiting", "waiting_for": None, "wake_at": 100.0},  # sleeping, not waiting
        {"status": "queued"},
        {"status": "running"},
        {"status": "paused", "waiting_for": "approval"},
    ],
    ids=["waiting-for-another-type", "sleeping", "queued", "running", "paused"],
)
def test_deliver_event_only_buffers_for_an_instance_not_waiting_for_that_type(
    tmp_path: Path, fields: dict[str, Any]
) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a", **fields)])
        before = await store.get_instance("a")
        assert await store.deliver_event("a", "approval", b"p", 5.0, 6.0) is False
        assert await store.get_instance("a") == before
        event = await store.take_event("a", "approval")
        assert event is not None and event.payload == b"p"

    run_with_store(tmp_path, body)


def test_deliver_event_to_an_unknown_instance_is_instance_not_found(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(InstanceNotFound, match="ghost"):
            await store.deliver_event("ghost", "approval", b"", 1.0, 1.0)

    run_with_store(tmp_path, body)


@pytest.mark.parametrize("status", ["complete", "errored", "terminated"])
def test_deliver_event_to_a_finished_instance_is_an_invalid_transition_and_buffers_nothing(
    tmp_path: Path, status: str
) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a", status=status, waiting_for="approval")])
        with pytest.raises(InvalidTransition, match=status):
            await store.deliver_event("a", "approval", b"", 1.0, 1.0)
        assert await store.take_event("a", "approval") is None
        assert (await store.get_instance("a")).status == status

    run_with_store(tmp_path, body)


def test_invalid_transition_is_a_value_error_as_the_store_interface_promises() -> None:
    assert issubclass(InvalidTransition, ValueError)


# --- restart -------------------------------------------------------------------------------------


def test_restart_forgets_steps_from_the_position_and_queues_the_instance_afresh(
    tmp_path: Path,
) -> None:
    async def body(store: Store) -> None:
        await store.create_instances(
            [
                instance(
                    "a",
                    status="errored",
                    output=b"out",
                    error=b"err",
                    wake_at=50.0,
                    waiting_for="approval",
                ),
                instance("b"),
            ]
        )
        for position in range(4):
            await store.put_step(step("a", position))
        await store.put_step(step("b", 2))
        await store.restart("a", 2, 7.0)
        assert [s.position for s in await store.steps("a")] == [0, 1]
        assert [s.position for s in await store.steps("b")] == [2]  # other instances untouched
        got = await store.get_instance("a")
        assert (got.status, got.output, got.error, got.wake_at, got.waiting_for, got.updated) == (
            "queued",
            None,
            None,
            None,
            None,
            7.0,
        )
        assert (got.params, got.created) == (b"\x80", 1.0)

    run_with_store(tmp_path, body)


def test_restart_from_position_zero_forgets_every_step(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([instance("a", status="complete", output=b"done")])
        for position in range(3):
            await store.put_step(step("a", position))
        await store.restart("a", 0, 2.0)
        assert await store.steps("a") == []
        assert (await store.get_instance("a")).status == "queued"

    run_with_store(tmp_path, body)


def test_restart_of_an_unknown_instance_is_instance_not_found(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.put_step(step("ghost", 0))  # a stray step: restart must not touch it
        with pytest.raises(InstanceNotFound):
            await store.restart("ghost", 0, 1.0)
        assert [s.position for s in await store.steps("ghost")] == [0]

    run_with_store(tmp_path, body)


# --- unfinished ----------------------------------------------------------------------------------


def test_unfinished_lists_every_instance_not_complete_errored_or_terminated(
    tmp_path: Path,
) -> None:
    async def body(store: Store) -> None:
        await store.create_instances(
            [
                instance("queued", created=1.0, tenant="t1"),
                instance("running", status="running", created=2.0),
                instance("waiting", status="waiting", created=3.0, wake_at=9.0, tenant="t2"),
                instance("paused", status="paused", created=4.0),
                instance("complete", status="complete", created=5.0),
                instance("errored", status="errored", created=6.0),
                instance("terminated", status="terminated", created=7.0),
            ]
        )
        assert await store.unfinished() == [
            ("queued", "queued", "t1", None),
            ("running", "running", None, None),
            ("waiting", "waiting", "t2", 9.0),
            ("paused", "paused", None, None),
        ]

    run_with_store(tmp_path, body)


def test_unfinished_is_empty_for_an_empty_store(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        assert await store.unfinished() == []

    run_with_store(tmp_path, body)


# --- metrics -------------------------------------------------------------------------------------


def test_add_metrics_sums_count_and_total_per_tenant_minute_and_name(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.add_metrics([("t", 10, "wakeups", 1.0, 0.5), ("t", 10, "steps", 3.0, 3.0)])
        await store.add_metrics([("t", 10, "wakeups", 2.0, 1.5), ("u", 10, "wakeups", 1.0, 9.0)])
        await store.add_metrics([("t", 10, "wakeups", 1.0, 0.25)])
        assert await store.metrics() == [
            ("t", 10, "steps", 3.0, 3.0),
            ("t", 10, "wakeups", 4.0, 2.25),
            ("u", 10, "wakeups", 1.0, 9.0),
        ]

    run_with_store(tmp_path, body)


def test_metrics_since_a_minute_leaves_out_earlier_minutes(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.add_metrics(
            [("t", minute, "wakeups", 1.0, float(minute)) for minute in (12, 10, 11, 13)]
        )
        assert [row[1] for row in await store.metrics()] == [10, 11, 12, 13]
        assert [row[1] for row in await store.metrics(since_minute=12)] == [12, 13]
        assert await store.metrics(since_minute=12) == [
            ("t", 12, "wakeups", 1.0, 12.0),
            ("t", 13, "wakeups", 1.0, 13.0),
        ]
        assert await store.metrics(since_minute=14) == []

    run_with_store(tmp_path, body)


def test_add_metrics_of_no_rows_writes_nothing(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.add_metrics([])
        assert await store.metrics() == []

    run_with_store(tmp_path, body)


# --- schema migration ----------------------------------------------------------------------------


def make_version_1_database(path: Path) -> None:
    """A file as the first release wrote it: only the first migration, user_version 1."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(MIGRATIONS[0])
        db.execute(
            "INSERT INTO instances (id, workflow, status, params, created, updated, tenant, "
            "version, output, error, wake_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            ("old", "wf", "waiting", b"\x81", 1.0, 2.0, "t", "v1", None, None, 30.0),
        )
        db.execute(
            "INSERT INTO instances (id, workflow, status, params, created, updated, tenant, "
            "version, output, error, wake_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            ("done", "wf", "complete", b"\x80", 3.0, 4.0, None, None, b"out", None, None),
        )
        db.execute(
            "INSERT INTO steps (instance_id, position, kind, name, occurrence, status, result, "
            "error, attempts, config) VALUES (?,?,?,?,?,?,?,?,?,?)",
            ("old", 0, "do", "fetch", 0, "complete", b"\x01", None, 1, b"\x82"),
        )
        db.execute(
            "INSERT INTO events (instance_id, seq, type, payload, timestamp) VALUES (?,?,?,?,?)",
            ("old", 1, "approval", b"yes", 5.0),
        )
        db.execute("PRAGMA user_version=1")
        db.commit()


def test_a_version_1_database_migrates_to_the_current_schema_keeping_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "engine.db"
    make_version_1_database(path)

    async def main() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            old = await store.get_instance("old")
            assert old == InstanceRecord(
                "old", "wf", "waiting", b"\x81", 1.0, 2.0, "t", "v1", None, None, 30.0, None
            )
            assert (await store.get_instance("done")).output == b"out"
            assert await store.steps("old") == [
                StepRecord("old", 0, "do", "fetch", 0, "complete", b"\x01", None, 1, b"\x82", None)
            ]
            assert await store.unfinished() == [("old", "waiting", "t", 30.0)]
            # the columns and table the second migration added are usable
            await store.record(step("old", 1, "pending", wake_at=40.0), "old", waiting_for="go")
            assert (await store.get_instance("old")).waiting_for == "go"
            assert (await store.steps("old"))[1].wake_at == 40.0
            await store.add_metrics([("t", 1, "wakeups", 1.0, 1.0)])
            assert await store.metrics() == [("t", 1, "wakeups", 1.0, 1.0)]
            event = await store.take_event("old", "approval")
            assert event == EventRecord("old", 1, "approval", b"yes", 5.0)
        finally:
            await store.close()

    asyncio.run(main())
    with contextlib.closing(sqlite3.connect(path)) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
    assert version == len(MIGRATIONS)


def test_a_migrated_database_opens_again_without_migrating_twice(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    make_version_1_database(path)

    async def main() -> None:
        for _ in range(2):
            store = SQLiteStore(path)
            await store.open()
            try:
                assert (await store.get_instance("old")).status == "waiting"
            finally:
                await store.close()

    asyncio.run(main())
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


# --- hosts and claims ----------------------------------------------------------------------------


def test_a_claim_is_held_by_one_live_host_and_moves_the_generation_on(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.register_host("a", "http://a", 1.0, 100.0)
        await store.register_host("b", "http://b", 1.0, 100.0)
        await store.create_instances([instance("i")])
        record, claimed = await store.claim("i", "a", 10.0)
        assert claimed and (record.owner, record.generation) == ("a", 1)
        record, claimed = await store.claim("i", "b", 10.0)  # a is alive: b may not
        assert not claimed and record.owner == "a"
        record, claimed = await store.claim("i", "a", 10.0)  # a runs it again (a lost sandbox)
        assert claimed and record.generation == 2
        assert await store.claimable("b", 10.0, 10) == []
        # a's lease lapses: b takes over, and a's wake-up is fenced out
        record, claimed = await store.claim("i", "b", 200.0)
        assert claimed and (record.owner, record.generation) == ("b", 3)
        with pytest.raises(StaleGeneration):
            await store.record(None, "i", generation=2, status="complete")
        await store.record(None, "i", generation=3, status="waiting", wake_at=300.0, owner=None)
        assert (await store.claim("i", "a", 250.0))[1] is False  # not due yet
        assert await store.claimable("a", 250.0, 10) == []
        assert await store.claimable("a", 300.0, 10) == [("i", None)]
        await store.renew_host("a", 1000.0)
        hosts = {h.id: h.lease_until for h in await store.hosts()}
        assert hosts == {"a": 1000.0, "b": 100.0}

    run_with_store(tmp_path, body)


def test_a_batch_claim_claims_each_runnable_one_with_its_steps_in_the_order_asked(
    tmp_path: Path,
) -> None:
    async def body(store: Store) -> None:
        await store.register_host("a", "", 1.0, 100.0)
        await store.register_host("b", "", 1.0, 100.0)
        await store.create_instances(
            [
                instance("queued"),
                instance("due", status="waiting", wake_at=5.0),
                instance("later", status="waiting", wake_at=50.0),
                instance("paused", status="paused"),
                instance("done", status="complete"),
                instance("taken"),
            ]
        )
        await store.put_step(step("due", 0, kind="sleep", name="nap"))
        await store.put_step(step("due", 1, status="running"))
        assert (await store.claim("taken", "b", 10.0))[1]
        asked = ["taken", "later", "due", "missing", "queued", "paused", "done"]
        claims = await store.claim_batch(asked, "a", 10.0)
        assert len(claims) == len(asked)
        by_id = dict(zip(asked, claims, strict=True))
        got = {i: (r.status if r else None, claimed) for i, (r, claimed, _) in by_id.items()}
        assert got == {
            "taken": ("queued", False),  # b is alive and holds it
            "later": ("waiting", False),  # not due yet
            "due": ("waiting", True),
            "missing": (None, False),
            "queued": ("queued", True),
            "paused": ("paused", False),
            "done": ("complete", False),
        }
        assert [s.position for s in by_id["due"][2]] == [0, 1]  # its steps, in order
        assert by_id["queued"][2] == [] and by_id["later"][2] == []
        due = by_id["due"][0]
        assert due is not None and (due.owner, due.generation) == ("a", 1)
        # the claim holds: b cannot take it, and a write of the claimed generation goes through
        assert (await store.claim_batch(["due"], "b", 10.0))[0][1] is False
        await store.record(None, "due", generation=1, status="complete", owner=None)

    run_with_store(tmp_path, body)


def test_claimable_lists_due_instances_that_no_live_host_owns_oldest_first(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.register_host("live", "", 1.0, 100.0)
        await store.register_host("dead", "", 1.0, 5.0)
        await store.create_instances(
            [
                instance("queued", created=3.0),
                instance("due", status="waiting", wake_at=2.0),
                instance("later", status="waiting", wake_at=99.0),
                instance("paused", status="paused"),
                instance("mine", status="queued", owner="live", created=1.0),
                instance("orphan", status="queued", owner="dead", created=4.0),
                instance("done", status="complete"),
            ]
        )
        got = await store.claimable("other", 10.0, 10)
        assert got == [("due", None), ("queued", None), ("orphan", None)]
        assert len(await store.claimable("other", 10.0, 2)) == 2
        # a host's own running wake-ups are never handed back to it (nor fenced out by it)
        assert ("mine", None) not in await store.claimable("live", 10.0, 10)

    run_with_store(tmp_path, body)


def test_a_pause_waits_for_a_running_wake_up_whose_last_write_settles_it(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.register_host("a", "", 1.0, 100.0)
        await store.create_instances([instance("idle"), instance("busy"), instance("done")])
        assert await store.request_pause("idle", 10.0) == "paused"
        record, _ = await store.claim("busy", "a", 10.0)
        assert await store.request_pause("busy", 10.0) == "waitingForPause"
        assert await store.request_pause("busy", 10.0) == "waitingForPause"
        # the wake-up suspends as it would have: the instance ends paused, not waiting
        await store.record(
            None, "busy", generation=record.generation, status="waiting", wake_at=50.0, owner=None
        )
        got = await store.get_instance("busy")
        assert (got.status, got.wake_at, got.owner) == ("paused", 50.0, None)
        await store.update_instance("done", status="complete")
        with pytest.raises(InvalidTransition):
            await store.request_pause("done", 10.0)

    run_with_store(tmp_path, body)
