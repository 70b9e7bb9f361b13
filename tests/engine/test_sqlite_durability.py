"""SQLite's own settings: the `durability` option, and reads served beside the writer's commits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from dynworkers.engine import Engine
from dynworkers.engine.sqlite_store import SQLiteStore
from dynworkers.engine.store import StoreError, open_store
from dynworkers.runtime.daemon.config import ConfigError, DaemonConfig
from tests.engine.test_store_contract import record


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("process", 1)])
def test_durability_sets_sqlite_synchronous_on_the_writer(
    tmp_path: Path, durability: str, synchronous: int
) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'engine.db'}", durability)
        await store.open()
        try:
            assert isinstance(store, SQLiteStore)
            setting = await store._do(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
            assert setting == synchronous
            await store.create_instances([record("a")])
            assert (await store.get_instance("a")).id == "a"
        finally:
            await store.close()

    asyncio.run(main())


def test_an_unknown_durability_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="'full', 'process'"):
        SQLiteStore(tmp_path / "engine.db", "fast")
    with pytest.raises(StoreError, match="durability"):
        Engine(None, f"sqlite:///{tmp_path / 'engine.db'}", durability="none")
    with pytest.raises(ConfigError, match="durability must be full or process"):
        DaemonConfig(durability="off")
    assert DaemonConfig(durability="process").durability == "process"


def test_reads_are_answered_while_the_writer_is_busy(tmp_path: Path) -> None:
    """A read never queues behind a commit (before: it waited for the writer thread)."""

    async def main() -> None:
        store = SQLiteStore(tmp_path / "engine.db")
        await store.open()
        release = threading.Event()
        try:
            await store.create_instances([record("a")])

            def stall(db: sqlite3.Connection) -> None:
                release.wait(30)  # only a guard against a hang

            stalled = asyncio.ensure_future(store._do(stall))
            got = await asyncio.wait_for(store.get_instance("a"), 10)
            assert got.id == "a"
            assert [r.id for r in await store.list_instances()] == ["a"]
            assert not stalled.done()
            release.set()
            await stalled
        finally:
            release.set()
            await store.close()

    asyncio.run(main())
