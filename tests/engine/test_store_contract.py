"""The store contract: every backend must pass these, SQLite and PostgreSQL (a real server).

Each test that goes through `run_with_store` runs once per backend (`[sqlite]`, `[sqlite-process]`:
SQLite at durability "process", whose commits run on the event loop, and `[postgresql]`).
The tests in `SQLITE_ONLY` build a `SQLiteStore` themselves and hold what is SQLite's by nature;
their PostgreSQL counterparts are in tests/engine/test_postgres_store.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dynworkers.engine import (
    InstanceNotFound,
    InstanceRecord,
    StepRecord,
    Store,
    StoreError,
    open_store,
)
from dynworkers.engine.sqlite_store import SQLiteStore

#: tests that are SQLite's by nature, run once, with why
SQLITE_ONLY = {
    "test_concurrent_writes_share_commits_and_a_failing_one_fails_alone": (
        "counts SQLiteStore's commits (PostgreSQL: test_postgres_store.py)"
    ),
    "test_data_survives_reopen_and_a_newer_schema_is_refused": (
        "reopens the file and edits PRAGMA user_version (PostgreSQL: test_postgres_store.py)"
    ),
    "test_unknown_store_urls_say_what_to_use": "no backend involved",
    "test_a_version_1_database_migrates_to_the_current_schema_keeping_its_rows": (
        "SQLite's own migration (PostgreSQL: test_postgres_store.py)"
    ),
    "test_a_migrated_database_opens_again_without_migrating_twice": "SQLite's own migration",
}
_url: list[str] = []  # the backend URL of the test running now
_durability: list[str] = []  # and its durability


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only_sqlite = metafunc.function.__name__ in SQLITE_ONLY
        names = ["sqlite"] if only_sqlite else ["sqlite", "sqlite-process", "postgresql"]
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path}/engine.db"
    _url[:] = [url]
    _durability[:] = ["process" if request.param == "sqlite-process" else "full"]
    yield request.param
    _url.clear()
    _durability.clear()


def backends(tmp_path: Path) -> list[str]:
    return list(_url)


def run_with_store(tmp_path: Path, body: Callable[[Store], Awaitable[Any]]) -> None:
    # a module that uses this imports `backend` and `pytest_generate_tests` from here too; a
    # test without a backend would otherwise pass having run nothing
    assert backends(tmp_path), "no backend: import backend and pytest_generate_tests"

    async def main() -> None:
        for url in backends(tmp_path):
            store = open_store(url, *_durability)
            await store.open()
            try:
                await body(store)
            finally:
                await store.close()

    asyncio.run(main())


def record(instance_id: str, **fields: Any) -> InstanceRecord:
    base: dict[str, Any] = dict(
        id=instance_id, workflow="wf", status="queued", params=b"\x80", created=1.0, updated=1.0
    )
    base.update(fields)
    return InstanceRecord(**base)


def test_create_skips_existing_ids_and_reports_only_the_new_ones(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        assert await store.create_instances([record("a"), record("b")]) == ["a", "b"]
        assert await store.create_instances([record("b"), record("c")]) == ["c"]
        assert (await store.get_instance("b")).status == "queued"

    run_with_store(tmp_path, body)


def test_unknown_instance_is_a_lookup_error_and_changes_nothing(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([record("a")])
        with pytest.raises(InstanceNotFound):
            await store.get_instance("nope")
        with pytest.raises(InstanceNotFound):
            await store.update_instance("nope", status="running")
        with pytest.raises(InstanceNotFound):
            await store.add_event("nope", "approval", b"", 1.0)
        with pytest.raises(StoreError):
            await store.update_instance("a", id="b")  # not an updatable field
        assert (await store.get_instance("a")).status == "queued"

    run_with_store(tmp_path, body)


def test_due_instances_are_queued_ones_and_waiting_ones_past_their_time(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances(
            [
                record("queued"),
                record("due", status="waiting", wake_at=5.0),
                record("later", status="waiting", wake_at=50.0),
                record("done", status="complete"),
            ]
        )
        due = await store.due_instances(now=10.0, limit=10)
        assert {r.id for r in due} == {"queued", "due"}

    run_with_store(tmp_path, body)


def test_count_by_status_counts_each_stored_status_and_omits_empty_ones(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        assert await store.count_by_status() == {}
        await store.create_instances(
            [
                record("q1"),
                record("q2"),
                record("w", status="waiting", wake_at=5.0),
                record("c", status="complete"),
            ]
        )
        await store.update_instance("q2", status="paused")
        assert await store.count_by_status() == {
            "queued": 1,
            "paused": 1,
            "waiting": 1,
            "complete": 1,
        }
        await store.delete_instance("c")
        assert "complete" not in await store.count_by_status()

    run_with_store(tmp_path, body)


def test_steps_are_replaced_by_position_and_forgotten_from_a_position(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([record("a")])
        for position in range(3):
            await store.put_step(
                StepRecord("a", position, "do", f"s{position}", 0, "pending", attempts=1)
            )
        await store.put_step(StepRecord("a", 1, "do", "s1", 0, "complete", result=b"\x01"))
        steps = await store.steps("a")
        assert [(s.name, s.status) for s in steps] == [
            ("s0", "pending"),
            ("s1", "complete"),
            ("s2", "pending"),
        ]
        await store.delete_steps_from("a", 1)
        assert [s.name for s in await store.steps("a")] == ["s0"]

    run_with_store(tmp_path, body)


def test_events_are_buffered_per_type_in_order(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([record("a")])
        await store.add_event("a", "approval", b"1", 1.0)
        await store.add_event("a", "other", b"x", 2.0)
        await store.add_event("a", "approval", b"2", 3.0)
        first = await store.take_event("a", "approval")
        second = await store.take_event("a", "approval")
        assert first is not None and second is not None
        assert (first.payload, second.payload) == (b"1", b"2")
        assert await store.take_event("a", "approval") is None
        assert await store.take_event("a", "other") is not None

    run_with_store(tmp_path, body)


def test_concurrent_writes_share_commits_and_a_failing_one_fails_alone(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "engine.db")
        await store.open()
        try:
            await store.create_instances([record("a")])
            before = store.commits
            results = await asyncio.gather(
                *(store.create_instances([record(f"i{n}")]) for n in range(200)),
                store.update_instance("missing", status="running"),
                return_exceptions=True,
            )
            assert sum(1 for r in results if r and not isinstance(r, Exception)) == 200
            assert isinstance(results[-1], InstanceNotFound)
            assert store.commits - before < 200  # group commit: many writes per transaction
            assert len(await store.list_instances(limit=1000)) == 201
        finally:
            await store.close()

    asyncio.run(main())


def test_data_survives_reopen_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "engine.db")
        await store.open()
        await store.create_instances([record("a")])
        await store.close()
        store = SQLiteStore(tmp_path / "engine.db")
        await store.open()
        assert (await store.get_instance("a")).id == "a"
        await store.close()
        db = sqlite3.connect(tmp_path / "engine.db")
        db.execute("PRAGMA user_version=99")
        db.close()
        with pytest.raises(StoreError, match="newer than this dynworkers"):
            await SQLiteStore(tmp_path / "engine.db").open()

    asyncio.run(main())


def test_unknown_store_urls_say_what_to_use() -> None:
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store("mysql://x")


def test_an_event_wakes_the_instance_waiting_for_its_type_and_no_other(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances(
            [
                record("w", status="waiting", waiting_for="approval", wake_at=50.0),
                record("done", status="complete"),
            ]
        )
        assert await store.deliver_event("w", "other", b"x", 1.0, now=2.0) is False
        assert (await store.get_instance("w")).status == "waiting"
        assert await store.deliver_event("w", "approval", b"y", 3.0, now=4.0) is True
        woken = await store.get_instance("w")
        assert (woken.status, woken.wake_at, woken.waiting_for, woken.updated) == (
            "queued",
            None,
            None,
            4.0,
        )
        with pytest.raises(ValueError, match="takes no more events"):
            await store.deliver_event("done", "approval", b"", 1.0, now=1.0)
        with pytest.raises(InstanceNotFound):
            await store.deliver_event("nope", "approval", b"", 1.0, now=1.0)
        taken = await store.take_event("w", "approval")
        assert taken is not None and taken.payload == b"y"

    run_with_store(tmp_path, body)


def test_wait_for_event_records_the_step_with_the_event_or_the_wait(
    tmp_path: Path,
) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([record("a")])
        step = StepRecord("a", 0, "wait", "approval", 0, "pending", attempts=1)
        waiting = {"status": "waiting", "waiting_for": "approval"}
        assert await store.wait_for_event(step, "approval", lambda e: e.payload, **waiting) is None
        assert await store.steps("a") == [step]
        assert (await store.get_instance("a")).status == "waiting"
        await store.add_event("a", "approval", b"ok", 1.0)
        event = await store.wait_for_event(step, "approval", lambda e: e.payload + b"!")
        assert event is not None and event.payload == b"ok"
        [recorded] = await store.steps("a")
        assert (recorded.status, recorded.result) == ("complete", b"ok!")
        assert await store.take_event("a", "approval") is None

    run_with_store(tmp_path, body)


def test_record_and_restart_are_atomic_and_unfinished_lists_what_to_resume(
    tmp_path: Path,
) -> None:
    async def body(store: Store) -> None:
        await store.create_instances(
            [record("a", created=1.0), record("b", created=2.0, status="complete")]
        )
        step = StepRecord("a", 0, "do", "s0", 0, "complete", result=b"\x01", attempts=1)
        await store.record(step, "a", status="running", updated=2.0)
        with pytest.raises(InstanceNotFound):  # the step is not written either
            await store.record(replace(step, instance_id="nope"), "nope", status="running")
        assert await store.steps("nope") == []
        await store.record(replace(step, position=1, name="s1"), "a")
        await store.record(None, "a", status="errored", error=b"\x02")
        assert await store.unfinished() == []
        await store.restart("a", 1, now=5.0)
        again = await store.get_instance("a")
        assert (again.status, again.error, again.updated) == ("queued", None, 5.0)
        assert [s.name for s in await store.steps("a")] == ["s0"]
        assert await store.unfinished() == [("a", "queued", None, None)]
        await store.delete_instance("a")
        assert await store.steps("a") == []
        with pytest.raises(InstanceNotFound):
            await store.delete_instance("a")

    run_with_store(tmp_path, body)


def test_metrics_add_up_per_tenant_minute_and_name(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.add_metrics([("t", 10, "warm", 1.0, 0.5), ("t", 11, "warm", 2.0, 1.0)])
        await store.add_metrics([("t", 10, "warm", 3.0, 1.5)])
        assert await store.metrics() == [("t", 10, "warm", 4.0, 2.0), ("t", 11, "warm", 2.0, 1.0)]
        assert await store.metrics(since_minute=11) == [("t", 11, "warm", 2.0, 1.0)]

    run_with_store(tmp_path, body)
