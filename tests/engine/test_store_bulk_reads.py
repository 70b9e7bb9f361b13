"""The store contract's bulk reads (`all_instances`, `events`), which `dynworkers export` reads
everything through: on both backends, SQLite and a real PostgreSQL (the contract's
parametrisation, tests/engine/test_store_contract.py)."""

from __future__ import annotations

from pathlib import Path

from dynworkers.engine import StepRecord, Store
from tests.engine.test_store_contract import (  # noqa: F401 (the backends' parametrisation)
    backend,
    pytest_generate_tests,
    record,
    run_with_store,
)


def test_all_instances_pages_through_every_status_by_id(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        assert await store.all_instances() == []
        statuses = ["queued", "waiting", "complete", "errored", "paused", "terminated", "running"]
        records = [
            record(f"i-{n:02d}", status=status, output=b"\x01" if status == "complete" else None)
            for n, status in enumerate(statuses * 3)
        ]
        await store.create_instances(records)
        seen, after = [], ""
        while page := await store.all_instances(after, limit=4):
            assert len(page) <= 4
            seen.extend(page)
            after = page[-1].id
        assert [r.id for r in seen] == sorted(r.id for r in records)
        assert {r.id: r for r in seen} == {r.id: r for r in records}  # every field as written

    run_with_store(tmp_path, body)


def test_events_lists_the_buffered_events_in_order_without_taking_them(tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.create_instances([record("a"), record("b")])
        assert await store.events("a") == []
        await store.add_event("a", "approval", b"1", 1.0)
        await store.add_event("b", "approval", b"x", 2.0)
        await store.add_event("a", "other", b"2", 3.0)
        await store.add_event("a", "approval", b"3", 4.0)
        listed = await store.events("a")
        assert [(e.type, e.payload, e.timestamp) for e in listed] == [
            ("approval", b"1", 1.0),
            ("other", b"2", 3.0),
            ("approval", b"3", 4.0),
        ]
        assert await store.events("a") == listed  # reading takes nothing
        taken = await store.take_event("a", "approval")
        assert taken is not None and taken.payload == b"1"
        assert [e.payload for e in await store.events("a")] == [b"2", b"3"]
        await store.put_step(StepRecord("a", 0, "do", "s", 0, "complete", result=b"\x01"))
        assert [e.payload for e in await store.events("b")] == [b"x"]

    run_with_store(tmp_path, body)
