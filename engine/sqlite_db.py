"""The threads of the SQLite store: one writer (group commit), one reader.

Host side: the event loop submits operations (functions of a connection) and awaits them. The
writer thread owns the read-write connection: it takes every operation queued, runs each inside
its own SAVEPOINT, and commits them all in one transaction, so a caller's await returns after the
commit that holds its record (durable) and a hundred concurrent callers share one fsync. An
operation that raises is rolled back to its savepoint alone and its caller gets the error; an
SQLite error (disk full, I/O error, locked) becomes `StoreError`. The reader thread owns a
read-only connection and answers pure reads in one transaction each, beside the writer's commits
(WAL): a read sees every write whose await has returned.

`durability` is SQLite's `synchronous` (engine.store.DURABILITY): "full" survives a power loss,
"process" survives kill -9 of the host.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dynworkers.engine.sqlite_schema import migrate
from dynworkers.engine.store import DURABILITY, StoreError, check_durability

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]


class SQLiteDatabase:
    """One SQLite file in use: a writer thread (group commit) and a reader thread."""

    def __init__(self, path: str | Path, durability: str = "full") -> None:
        self.path = Path(path)
        self.durability = check_durability(durability)
        self._queue: queue.SimpleQueue[tuple[Operation, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._reads: queue.SimpleQueue[tuple[Operation, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0  # transactions committed: the group-commit figure

    # --- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="dynworkers-store", daemon=True
        )
        self._thread.start()
        await ready  # the schema is migrated: the reader may open its connection
        opened: asyncio.Future[None] = self._loop.create_future()
        self._reader = threading.Thread(
            target=self._read_loop, args=(opened,), name="dynworkers-store-read", daemon=True
        )
        self._reader.start()
        try:
            await opened
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._reader is not None:
            self._reads.put(None)
            await asyncio.to_thread(self._reader.join)
            self._reader = None
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def _connect(self) -> sqlite3.Connection:
        self.path.touch(mode=0o600)  # private; SQLite gives its -wal and -shm the same mode
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        # WAL: readers never block the writer; commits append to the log instead of rewriting.
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit the engine reported is on disk even after a power loss; group commit
        # pays for the fsync once per batch. NORMAL ("process"): no fsync per commit.
        db.execute(f"PRAGMA synchronous={DURABILITY[self.durability]}")
        db.execute("PRAGMA foreign_keys=ON")
        migrate(db)
        return db

    def _run(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            db = self._connect()
        except Exception as exc:
            error = exc
            self._loop.call_soon_threadsafe(ready.set_exception, StoreError(f"open: {error}"))
            return
        self._loop.call_soon_threadsafe(ready.set_result, None)
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(db, batch)
            if stop:
                break
        db.close()

    def _read_loop(self, opened: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            error = StoreError(f"open for reading: {exc}")
            self._loop.call_soon_threadsafe(opened.set_exception, error)
            return
        self._loop.call_soon_threadsafe(opened.set_result, None)
        while (item := self._reads.get()) is not None:
            operation, future = item
            try:
                db.execute("BEGIN")
                try:
                    outcome = (future, True, operation(db))
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as exc:
                outcome = (future, False, StoreError(f"read failed: {exc}"))
            except Exception as exc:
                outcome = (future, False, exc)
            self._loop.call_soon_threadsafe(_settle, *outcome)
        db.close()

    def _commit(
        self, db: sqlite3.Connection, batch: list[tuple[Operation, asyncio.Future[Any]]]
    ) -> None:
        assert self._loop is not None
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for operation, future in batch:
                db.execute("SAVEPOINT op")
                try:
                    value = operation(db)
                except sqlite3.Error as exc:  # disk full, I/O error, locked: not the caller's
                    db.execute("ROLLBACK TO op")
                    outcomes.append((future, False, StoreError(f"write failed: {exc}")))
                except Exception as exc:
                    db.execute("ROLLBACK TO op")
                    outcomes.append((future, False, exc))
                else:
                    outcomes.append((future, True, value))
                db.execute("RELEASE op")
            db.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            outcomes = [(future, False, StoreError(f"commit failed: {exc}")) for _, future in batch]
        for future, ok, value in outcomes:
            self._loop.call_soon_threadsafe(_settle, future, ok, value)

    async def write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None or self._loop is None:
            raise StoreError("the store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((operation, future))
        return await future

    async def read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run a pure read on the reader thread, beside the writer's commits."""
        if self._reader is None or self._loop is None:
            raise StoreError("the store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._reads.put((operation, future))
        return await future


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
