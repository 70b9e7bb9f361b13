"""The store contract: every backend must pass these (SQLite today; PostgreSQL joins the list)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
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


def backends(tmp_path: Path) -> list[str]:
    return [f"sqlite:///{tmp_path}/engine.db"]


def run_with_store(tmp_path: Path, body: Callable[[Store], Awaitable[Any]]) -> None:
    async def main() -> None:
        for url in backends(tmp_path):
            store = open_store(url)
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
