"""The connections of the SQLite store: the writer (group commit) and the reader.

Host side: the event loop submits operations (functions of a connection) and awaits them; an
operation runs inside its own SAVEPOINT when it shares a transaction, so one that raises is rolled
back alone and its caller gets the error while the others commit; an SQLite error (disk full, I/O
error, locked) becomes `StoreError`. A caller's await returns after the commit that holds its
record. The reader thread owns a read-only connection and answers pure reads in one transaction
each, beside the writer's commits (WAL): a read sees every write whose await has returned.

Where the writes run depends on `durability` (SQLite's `synchronous`, engine.store.DURABILITY):

- "full" (survives a power loss): a writer thread owns the read-write connection, takes every
  operation queued and commits them in one transaction, so concurrent callers share one fsync
  and the loop never waits for one. An operation submitted with `durable=False` (a wake-up's
  claim: on SQLite one process owns the file, so a claim only matters while it lives) needs no
  fsync of its own: a transaction of such operations only commits with `synchronous=OFF`; it is
  in the operating system's cache (it survives kill -9), and the next durable commit's fsync of
  the log covers it. WAL checkpoints never run in such a transaction (they stay synced).
- "process" (survives kill -9 of the host, not a power loss): a commit waits for no disk, so the
  loop runs it itself, once per loop turn for every operation submitted in that turn (no thread
  hop each way: about 100 us a step on this project's machines). The loop also checkpoints the
  log every `CHECKPOINT_EVERY` commits (about 1 ms with its syncs, measured: 5 us a commit).
  A checkpointer thread beside the loop never let the log start over: SQLite restarts it only
  at a write that begins once every frame is copied, and the loop commits back to back, so the
  log grew by every commit (150 MB after 35,000 small ones). An operation must be quick: they
  are single statements or short loops over one instance's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
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
#: (operation, its future, whether its commit must be durable)
Item = tuple[Operation, "asyncio.Future[Any]", bool]
#: ("process") commits between two checkpoints, about 1,000 log pages as SQLite's default
CHECKPOINT_EVERY = 200


class SQLiteDatabase:
    """One SQLite file in use: the writer (a thread, or the loop) and a reader thread."""

    def __init__(self, path: str | Path, durability: str = "full") -> None:
        self.path = Path(path)
        self.durability = check_durability(durability)
        #: "process": the loop commits; the writer thread only opens the file
        self.on_loop = self.durability == "process"
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._reads: queue.SimpleQueue[tuple[Operation, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: sqlite3.Connection | None = None  # "process": the loop's connection
        self._batch: list[Item] = []  # "process": submitted in this loop turn
        self.commits = 0  # transactions committed: the group-commit figure

    # --- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[sqlite3.Connection] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="dynworkers-store", daemon=True
        )
        self._thread.start()
        db = await ready  # the schema is migrated: the reader may open its connection
        if self.on_loop:
            self._db = db
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
        if self._batch:
            self._flush()
        if self._reader is not None:
            self._reads.put(None)
            await asyncio.to_thread(self._reader.join)
            self._reader = None
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connect(self) -> sqlite3.Connection:
        self.path.touch(mode=0o600)  # private; SQLite gives its -wal and -shm the same mode
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        # WAL: readers never block the writer; commits append to the log instead of rewriting.
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit the engine reported is on disk even after a power loss; group commit
        # pays for the fsync once per batch. NORMAL ("process"): no fsync per commit.
        db.execute(f"PRAGMA synchronous={DURABILITY[self.durability]}")
        db.execute("PRAGMA foreign_keys=ON")
        if self.on_loop:
            # the loop checkpoints at a count of commits it chooses (`_flush`)
            db.execute("PRAGMA wal_autocheckpoint=0")
        migrate(db)
        return db

    def _run(self, ready: asyncio.Future[sqlite3.Connection]) -> None:
        assert self._loop is not None
        try:
            db = self._connect()
        except Exception as exc:
            error = exc
            self._loop.call_soon_threadsafe(ready.set_exception, StoreError(f"open: {error}"))
            return
        self._loop.call_soon_threadsafe(ready.set_result, db)
        if self.on_loop:
            return  # the loop owns the writer from here
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
            for future, ok, value in self._commit(db, batch):
                self._loop.call_soon_threadsafe(_settle, future, ok, value)
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
        self, db: sqlite3.Connection, batch: list[Item]
    ) -> list[tuple[asyncio.Future[Any], bool, Any]]:
        """Run `batch` in one transaction; each operation's outcome."""
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        lazy = not self.on_loop and not any(durable for _, _, durable in batch)
        try:
            if lazy:  # no fsync of its own; no checkpoint in an unsynced commit
                db.execute("PRAGMA synchronous=OFF")
                db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # alone: its failure rolls the transaction back (below)
                operation, future, _ = batch[0]
                outcomes.append((future, True, operation(db)))
            else:
                for operation, future, _ in batch:
                    outcomes.append(_in_savepoint(db, operation, future))
            db.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            failure = StoreError(f"{'write' if len(batch) == 1 else 'commit'} failed: {exc}")
            outcomes = [(future, False, failure) for _, future, _ in batch]
        except Exception as exc:  # the single operation raised
            outcomes = [(batch[0][1], False, exc)]
        finally:  # whatever happened, the connection is left outside any transaction
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # (the next BEGIN reports a broken one)
                    db.execute("ROLLBACK")
            if lazy:  # an in-memory setting: it does not fail outside a transaction
                db.execute(f"PRAGMA synchronous={DURABILITY[self.durability]}")
                db.execute("PRAGMA wal_autocheckpoint=1000")
        return outcomes

    def _flush(self) -> None:
        """("process") Commit, on the loop, what was submitted in this loop turn."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self._db is None:
            for _, future, _ in batch:
                _settle(future, False, StoreError("the store is closed"))
            return
        for future, ok, value in self._commit(self._db, batch):
            _settle(future, ok, value)
        if self.commits % CHECKPOINT_EVERY == 0:
            _checkpoint(self._db)

    async def write(self, operation: Callable[[sqlite3.Connection], T], durable: bool = True) -> T:
        """Run `operation` in a write transaction; return once it committed. `durable=False`:
        the commit may skip its own fsync (see the module docstring)."""
        if self._thread is None or self._loop is None:
            raise StoreError("the store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        if self.on_loop:
            self._batch.append((operation, future, durable))
            if len(self._batch) == 1:
                self._loop.call_soon(self._flush)
        else:
            self._queue.put((operation, future, durable))
        return await future

    async def read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run a pure read on the reader thread, beside the writer's commits."""
        if self._reader is None or self._loop is None:
            raise StoreError("the store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._reads.put((operation, future))
        return await future


def _in_savepoint(
    db: sqlite3.Connection, operation: Operation, future: asyncio.Future[Any]
) -> tuple[asyncio.Future[Any], bool, Any]:
    """Run one operation of a shared transaction; roll back only its own writes if it fails."""
    db.execute("SAVEPOINT op")
    try:
        value = operation(db)
    except sqlite3.Error as exc:  # disk full, I/O error, locked: not the caller's
        db.execute("ROLLBACK TO op")
        return future, False, StoreError(f"write failed: {exc}")
    except Exception as exc:
        db.execute("ROLLBACK TO op")
        return future, False, exc
    finally:
        db.execute("RELEASE op")
    return future, True, value


def _checkpoint(db: sqlite3.Connection) -> None:
    """PASSIVE: copy what it can of the log without waiting for (or blocking) the readers; one
    that fails leaves the rest to the next."""
    with contextlib.suppress(sqlite3.Error):
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
