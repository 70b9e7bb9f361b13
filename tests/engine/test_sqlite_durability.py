"""SQLite's own settings: the `durability` option, and reads served beside the writer's commits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from dynworkers.engine import Engine
from dynworkers.engine.sqlite_store import SQLiteStore
from dynworkers.engine.store import InstanceNotFound, StaleGeneration, StoreError, open_store
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


def test_a_claim_commits_without_a_sync_of_its_own_and_still_fences(tmp_path: Path) -> None:
    """durability full: a claim's transaction runs with synchronous=OFF (no fsync; one process
    owns the file, and the next durable commit's fsync covers it), every other write with FULL,
    and the generation the claim moved on still refuses the wake-up it replaced."""

    async def main() -> None:
        store = SQLiteStore(tmp_path / "engine.db")
        await store.open()
        statements: list[str] = []
        try:
            await store._do(lambda db: db.set_trace_callback(statements.append))
            await store.create_instances([record("a")])
            first, claimed = await store.claim("a", "host", 10.0)
            assert claimed and first.generation == 1
            await store.record(None, "a", generation=1, status="waiting", wake_at=5.0, owner=None)
            again, claimed = await store.claim("a", "host", 10.0)
            assert claimed and again.generation == 2
            with pytest.raises(StaleGeneration):  # the first wake-up is fenced out
                await store.record(None, "a", generation=1, status="complete")
            await store.record(None, "a", generation=2, status="complete", owner=None)
        finally:
            await store.close()
        synchronous, transactions = "FULL", []  # each: [its synchronous, its statements...]
        for statement in statements:
            if statement.startswith("PRAGMA synchronous="):
                synchronous = statement.removeprefix("PRAGMA synchronous=")
            elif statement == "BEGIN IMMEDIATE":
                transactions.append([synchronous])
            elif transactions:
                transactions[-1].append(statement)
        claims = [t for t in transactions if any("owner = 'host', generation" in s for s in t)]
        assert len(claims) == 2 and len(transactions) == 6
        assert [t[0] for t in transactions if t not in claims] == ["FULL"] * 4
        assert [t[0] for t in claims] == ["OFF", "OFF"]
        assert synchronous == "FULL"  # restored after each claim
        reopened = SQLiteStore(tmp_path / "engine.db")
        await reopened.open()
        try:
            got = await reopened.get_instance("a")
            assert (got.status, got.generation) == ("complete", 2)
        finally:
            await reopened.close()

    asyncio.run(main())


def test_durability_process_commits_on_the_loop_one_transaction_per_turn(tmp_path: Path) -> None:
    """durability process: no thread hop per write; writes submitted in one loop turn share a
    commit, and one that fails fails alone."""

    async def main() -> None:
        store = SQLiteStore(tmp_path / "engine.db", "process")
        await store.open()
        try:
            loop_thread = threading.get_ident()
            ran_in = await store._do(lambda db: threading.get_ident())
            assert ran_in == loop_thread
            before = store.commits
            results = await asyncio.gather(
                *(store.create_instances([record(f"i{n}")]) for n in range(50)),
                store.update_instance("missing", status="running"),
                return_exceptions=True,
            )
            assert store.commits - before == 1
            assert isinstance(results[-1], InstanceNotFound)
            assert len(await store.list_instances(limit=100)) == 50
        finally:
            await store.close()
        reopened = SQLiteStore(tmp_path / "engine.db", "process")
        await reopened.open()
        try:
            assert len(await reopened.list_instances(limit=100)) == 50
        finally:
            await reopened.close()

    asyncio.run(main())


def test_durability_process_keeps_the_log_from_growing_under_back_to_back_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite starts its log over only at a write that begins once every frame was copied; the
    loop commits back to back, so a checkpointer thread alone never got there (the log grew by
    every commit). The log stays within a few triggers' worth of frames."""
    from dynworkers.engine import sqlite_db

    monkeypatch.setattr(sqlite_db, "CHECKPOINT_EVERY", 50)
    commits, row = 3_000, "x" * 200

    async def main() -> int:
        db = sqlite_db.SQLiteDatabase(tmp_path / "log.db", "process")
        await db.open()
        try:
            await db.write(lambda c: c.execute("CREATE TABLE t (i INTEGER, s TEXT)"))
            for i in range(commits):
                await db.write(lambda c, i=i: c.execute("INSERT INTO t VALUES (?, ?)", (i, row)))
            return (tmp_path / "log.db-wal").stat().st_size
        finally:
            await db.close()

    size = asyncio.run(main())
    page = 4096
    assert size < 4 * 50 * 2 * page, f"{size} bytes of log after {commits} commits"


def test_a_batch_claim_reads_no_steps_in_its_transaction(tmp_path: Path) -> None:
    """With durability "process" the loop runs the writer's transactions: a claim of many large
    instances must not read their steps there (they are read on the reader thread after)."""
    from dynworkers.engine import StepRecord

    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'engine.db'}", "process")
        await store.open()
        try:
            assert isinstance(store, SQLiteStore)
            await store.create_instances([record("a"), record("b")])
            step = StepRecord("a", 0, "do", "s", 0, "complete", result=b"\x01")
            await store.record(step, "a")
            on_writer: list[str] = []
            writer = store.db._db
            assert writer is not None
            writer.set_trace_callback(on_writer.append)
            claims = await store.claim_batch(["a", "b", "missing"], "host", 10.0)
            writer.set_trace_callback(None)
            assert [(c[0] and c[0].id, c[1], [s.name for s in c[2]]) for c in claims] == [
                ("a", True, ["s"]),
                ("b", True, []),
                (None, False, []),
            ]
            assert on_writer and not [sql for sql in on_writer if "FROM steps" in sql]
        finally:
            await store.close()

    asyncio.run(main())
