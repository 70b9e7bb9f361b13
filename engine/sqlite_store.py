"""The SQLite store: one file, WAL mode, group commit, schema version and migrations.

Host side. One writer thread owns the connection; callers on the event loop submit operations and
await them. The thread takes every operation queued, runs each inside its own SAVEPOINT, and
commits them all in one transaction: a caller's await returns after the commit that holds its
record (durable), and a hundred concurrent callers share one fsync. An operation that raises is
rolled back to its savepoint alone and its caller gets the error; the others commit.

Reads do not queue behind commits: a second thread owns a read-only connection and answers every
pure read (WAL lets it read while the writer commits). A read sees every write whose await has
returned, never one still in flight; each read runs in one transaction, so it sees one snapshot.

`durability` is how far a commit the engine reported survives: "full" (the default, SQLite
`synchronous=FULL`) survives a power loss; "process" (`synchronous=NORMAL`) survives kill -9 of
the host (the commit is in the operating system's cache) but its last commits may be lost in a
power loss or kernel crash. Neither ever corrupts the file.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from dynworkers.engine.errors import InvalidTransition
from dynworkers.engine.store import (
    DURABILITY,
    EventRecord,
    HistoryRecord,
    HistoryRow,
    HostRecord,
    InstanceNotFound,
    InstanceRecord,
    StaleGeneration,
    StepRecord,
    Store,
    StoreError,
    check_durability,
    settle_pause,
)

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]

#: Each migration moves the schema from version N to N+1; never edit one that has shipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        status TEXT NOT NULL,
        params BLOB NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        tenant TEXT,
        version TEXT,
        output BLOB,
        error BLOB,
        wake_at REAL
    );
    -- the scheduler's question: what is runnable now, oldest first
    CREATE INDEX instances_due ON instances (status, wake_at);
    CREATE INDEX instances_tenant ON instances (tenant, created);
    CREATE TABLE steps (
        instance_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        occurrence INTEGER NOT NULL,
        status TEXT NOT NULL,
        result BLOB,
        error BLOB,
        attempts INTEGER NOT NULL,
        config BLOB,
        PRIMARY KEY (instance_id, position)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        instance_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        payload BLOB NOT NULL,
        timestamp REAL NOT NULL,
        PRIMARY KEY (instance_id, seq)
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE instances ADD COLUMN waiting_for TEXT;
    ALTER TABLE steps ADD COLUMN wake_at REAL;
    -- hot-path figures, summed per tenant per minute so that history survives a restart
    CREATE TABLE metrics (
        tenant TEXT NOT NULL,
        minute INTEGER NOT NULL,
        name TEXT NOT NULL,
        count REAL NOT NULL,
        total REAL NOT NULL,
        PRIMARY KEY (tenant, minute, name)
    ) WITHOUT ROWID;
    """,
    """
    -- the fence: terminate, restart and delete move it on, and a wake-up's writes carry theirs
    ALTER TABLE instances ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    """,
    """
    -- claims: the host whose wake-up runs the instance, lapsing with that host's lease
    ALTER TABLE instances ADD COLUMN owner TEXT;
    CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        started REAL NOT NULL,
        lease_until REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    """
    -- child workflows: the instance that started this one
    ALTER TABLE instances ADD COLUMN parent TEXT;
    CREATE INDEX instances_parent ON instances (parent) WHERE parent IS NOT NULL;
    -- retention: finished instances by age
    CREATE INDEX instances_finished ON instances (updated)
        WHERE status IN ('complete', 'errored', 'terminated');
    """,
    """
    -- what an instance did: attempts, sleeps, waits, events, operations, oldest first
    CREATE TABLE history (
        instance_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail BLOB NOT NULL,
        PRIMARY KEY (instance_id, seq)
    ) WITHOUT ROWID;
    """,
]

_INSTANCE_FIELDS = (
    "id, workflow, status, params, created, updated, tenant, version, output, error, wake_at, "
    "waiting_for, generation, owner, parent"
)
#: a claim holds while its owner's lease is ahead of :now (no owner: nobody runs it)
_UNOWNED = (
    "(owner IS NULL OR owner = :host OR NOT EXISTS "
    "(SELECT 1 FROM hosts WHERE hosts.id = instances.owner AND hosts.lease_until >= :now))"
)
#: owned by nobody live, not even this host (whose own running wake-ups it must not disturb)
_ORPHANED = (
    "(owner IS NULL OR NOT EXISTS "
    "(SELECT 1 FROM hosts WHERE hosts.id = instances.owner AND hosts.lease_until >= :now))"
)
#: runnable now: queued, or waiting with no wake time or one that has passed
_RUNNABLE = "(status = 'queued' OR (status = 'waiting' AND (wake_at IS NULL OR wake_at <= :now)))"
_STEP_FIELDS = (
    "instance_id, position, kind, name, occurrence, status, result, error, attempts, config, "
    "wake_at"
)
_UPDATABLE = frozenset(
    {
        "status",
        "updated",
        "output",
        "error",
        "wake_at",
        "version",
        "params",
        "tenant",
        "waiting_for",
        "owner",
    }
)
_FINISHED = ("complete", "errored", "terminated")


def _instance(row: tuple[Any, ...]) -> InstanceRecord:
    return InstanceRecord(*row)


class SQLiteStore(Store):
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
        self._migrate(db)
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{db} has schema version {version}, newer than this dynworkers "
                f"({len(MIGRATIONS)}): upgrade dynworkers or use another file"
            )
        for number in range(version, len(MIGRATIONS)):
            db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={number + 1}")
            db.execute("COMMIT")

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

    async def _do(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None or self._loop is None:
            raise StoreError("the store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((operation, future))
        return await future

    async def _read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run a pure read on the reader thread, beside the writer's commits."""
        if self._reader is None or self._loop is None:
            raise StoreError("the store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._reads.put((operation, future))
        return await future

    # --- instances -------------------------------------------------------------------------------

    async def create_instances(self, records: list[InstanceRecord]) -> list[str]:
        def operation(db: sqlite3.Connection) -> list[str]:
            created = []
            for r in records:
                # OR IGNORE: an id that exists is skipped, as create_batch promises
                cursor = db.execute(
                    f"INSERT OR IGNORE INTO instances ({_INSTANCE_FIELDS}) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        r.id,
                        r.workflow,
                        r.status,
                        r.params,
                        r.created,
                        r.updated,
                        r.tenant,
                        r.version,
                        r.output,
                        r.error,
                        r.wake_at,
                        r.waiting_for,
                        r.generation,
                        r.owner,
                        r.parent,
                    ),
                )
                if cursor.rowcount:
                    created.append(r.id)
            return created

        return await self._do(operation)

    async def get_instance(self, instance_id: str) -> InstanceRecord:
        def operation(db: sqlite3.Connection) -> InstanceRecord:
            row = db.execute(
                f"SELECT {_INSTANCE_FIELDS} FROM instances WHERE id=?", (instance_id,)
            ).fetchone()
            if row is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            return _instance(row)

        return await self._read(operation)

    async def update_instance(self, instance_id: str, **fields: object) -> None:
        _check_fields(fields)
        await self._do(lambda db: _update(db, instance_id, fields))

    async def delete_instance(self, instance_id: str) -> None:
        def operation(db: sqlite3.Connection) -> None:
            cursor = db.execute("DELETE FROM instances WHERE id=?", (instance_id,))
            if cursor.rowcount == 0:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            db.execute("DELETE FROM steps WHERE instance_id=?", (instance_id,))
            db.execute("DELETE FROM events WHERE instance_id=?", (instance_id,))
            db.execute("DELETE FROM history WHERE instance_id=?", (instance_id,))

        await self._do(operation)

    async def list_instances(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InstanceRecord]:
        clauses, params = [], []
        if tenant is not None:
            clauses.append("tenant=?")
            params.append(tenant)
        if status is not None:
            clauses.append("status=?")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def operation(db: sqlite3.Connection) -> list[InstanceRecord]:
            rows = db.execute(
                f"SELECT {_INSTANCE_FIELDS} FROM instances {where} ORDER BY created LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [_instance(row) for row in rows]

        return await self._read(operation)

    async def due_instances(self, now: float, limit: int) -> list[InstanceRecord]:
        def operation(db: sqlite3.Connection) -> list[InstanceRecord]:
            rows = db.execute(
                f"SELECT {_INSTANCE_FIELDS} FROM instances "
                "WHERE status='queued' OR (status='waiting' AND wake_at<=?) "
                "ORDER BY COALESCE(wake_at, created) LIMIT ?",
                (now, limit),
            ).fetchall()
            return [_instance(row) for row in rows]

        return await self._read(operation)

    async def count_by_status(self) -> dict[str, int]:
        def operation(db: sqlite3.Connection) -> dict[str, int]:
            # GROUP BY status walks the instances_due index (status first), not the table
            rows = db.execute("SELECT status, count(*) FROM instances GROUP BY status").fetchall()
            return {status: int(count) for status, count in rows}

        return await self._read(operation)

    # --- steps -----------------------------------------------------------------------------------

    async def steps(self, instance_id: str) -> list[StepRecord]:
        def operation(db: sqlite3.Connection) -> list[StepRecord]:
            rows = db.execute(
                f"SELECT {_STEP_FIELDS} FROM steps WHERE instance_id=? ORDER BY position",
                (instance_id,),
            ).fetchall()
            return [StepRecord(*row) for row in rows]

        return await self._read(operation)

    async def put_step(self, step: StepRecord) -> None:
        await self._do(lambda db: _put_step(db, step))

    async def record(
        self,
        step: StepRecord | None,
        instance_id: str,
        *,
        generation: int | None = None,
        history: list[HistoryRow] | None = None,
        **fields: object,
    ) -> None:
        _check_fields(fields)

        def operation(db: sqlite3.Connection) -> None:
            values = fields
            if generation is not None:
                values = settle_pause(_check_generation(db, instance_id, generation), fields)
            if values:
                _update(db, instance_id, values)
            if step is not None:
                _put_step(db, step)
            if history:
                _append_history(db, instance_id, history)

        await self._do(operation)

    async def add_history(self, instance_id: str, rows: list[HistoryRow]) -> None:
        def operation(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM instances WHERE id=?", (instance_id,)).fetchone() is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            _append_history(db, instance_id, rows)

        if rows:
            await self._do(operation)

    async def history(self, instance_id: str, limit: int = 10_000) -> list[HistoryRecord]:
        def operation(db: sqlite3.Connection) -> list[HistoryRecord]:
            rows = db.execute(
                "SELECT instance_id, seq, at, kind, detail FROM history WHERE instance_id=? "
                "ORDER BY seq LIMIT ?",
                (instance_id, limit),
            ).fetchall()
            return [HistoryRecord(*row) for row in rows]

        return await self._read(operation)

    async def wait_for_event(
        self,
        pending: StepRecord,
        type: str,
        encode: Callable[[EventRecord], bytes],
        *,
        generation: int | None = None,
        **fields: object,
    ) -> EventRecord | None:
        _check_fields(fields)
        instance_id = pending.instance_id

        def operation(db: sqlite3.Connection) -> EventRecord | None:
            values = fields
            if generation is not None:
                values = settle_pause(_check_generation(db, instance_id, generation), fields)
            # one transaction with deliver_event's: the event is either buffered now (taken
            # here) or delivered after this commit (and then finds the instance waiting)
            event = _take_event(db, instance_id, type)
            if event is not None:
                _put_step(db, replace(pending, status="complete", result=encode(event)))
                return event
            if values:
                _update(db, instance_id, values)
            _put_step(db, pending)
            return None

        return await self._do(operation)

    async def fence(self, instance_id: str, **fields: object) -> int:
        _check_fields(fields)

        def operation(db: sqlite3.Connection) -> int:
            generation = _next_generation(db, instance_id)
            if fields:
                _update(db, instance_id, fields)
            return generation

        return await self._do(operation)

    async def delete_steps_from(self, instance_id: str, position: int) -> None:
        def operation(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM steps WHERE instance_id=? AND position>=?", (instance_id, position)
            )

        await self._do(operation)

    # --- events ----------------------------------------------------------------------------------

    async def add_event(self, instance_id: str, type: str, payload: bytes, timestamp: float) -> int:
        def operation(db: sqlite3.Connection) -> int:
            if db.execute("SELECT 1 FROM instances WHERE id=?", (instance_id,)).fetchone() is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            return _insert_event(db, instance_id, type, payload, timestamp)

        return await self._do(operation)

    async def take_event(self, instance_id: str, type: str) -> EventRecord | None:
        return await self._do(lambda db: _take_event(db, instance_id, type))

    async def deliver_event(
        self, instance_id: str, type: str, payload: bytes, timestamp: float, now: float
    ) -> bool:
        def operation(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT status, waiting_for FROM instances WHERE id=?", (instance_id,)
            ).fetchone()
            if row is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            status, waiting_for = row
            if status in _FINISHED:
                raise InvalidTransition(
                    f"instance {instance_id!r} is {status}: it takes no more events "
                    "(restart it first, or create a new one)"
                )
            _insert_event(db, instance_id, type, payload, timestamp)
            if status == "waiting" and waiting_for == type:
                # the same transaction: an event can never land between "waits" and "woken"
                _update(
                    db,
                    instance_id,
                    {"status": "queued", "wake_at": None, "waiting_for": None, "updated": now},
                )
                return True
            return False

        return await self._do(operation)

    async def restart(self, instance_id: str, position: int, now: float) -> int:
        def operation(db: sqlite3.Connection) -> int:
            generation = _next_generation(db, instance_id)
            _update(
                db,
                instance_id,
                {
                    "owner": None,
                    "status": "queued",
                    "output": None,
                    "error": None,
                    "wake_at": None,
                    "waiting_for": None,
                    "updated": now,
                },
            )
            db.execute(
                "DELETE FROM steps WHERE instance_id=? AND position>=?", (instance_id, position)
            )
            return generation

        return await self._do(operation)

    async def unfinished(self) -> list[tuple[str, str, str | None, float | None]]:
        def operation(db: sqlite3.Connection) -> list[tuple[str, str, str | None, float | None]]:
            rows = db.execute(
                "SELECT id, status, tenant, wake_at FROM instances "
                "WHERE status NOT IN ('complete', 'errored', 'terminated') ORDER BY created"
            ).fetchall()
            return [tuple(row) for row in rows]

        return await self._read(operation)

    # --- children and retention ------------------------------------------------------------------

    async def children(self, parent: str) -> list[str]:
        def operation(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT id FROM instances WHERE parent=? "
                "AND status NOT IN ('complete', 'errored', 'terminated') ORDER BY created",
                (parent,),
            ).fetchall()
            return [row[0] for row in rows]

        return await self._read(operation)

    async def purge_finished(self, before: float, limit: int = 1000) -> int:
        def operation(db: sqlite3.Connection) -> int:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM instances WHERE status IN ('complete', 'errored', "
                    "'terminated') AND updated < ? ORDER BY updated LIMIT ?",
                    (before, limit),
                ).fetchall()
            ]
            for instance_id in ids:
                db.execute("DELETE FROM instances WHERE id=?", (instance_id,))
                db.execute("DELETE FROM steps WHERE instance_id=?", (instance_id,))
                db.execute("DELETE FROM events WHERE instance_id=?", (instance_id,))
                db.execute("DELETE FROM history WHERE instance_id=?", (instance_id,))
            return len(ids)

        return await self._do(operation)

    # --- hosts and claims ------------------------------------------------------------------------

    async def register_host(self, host: str, address: str, now: float, lease_until: float) -> None:
        def operation(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO hosts (id, address, started, lease_until) VALUES (?,?,?,?) "
                "ON CONFLICT (id) DO UPDATE SET address = excluded.address, "
                "started = excluded.started, lease_until = excluded.lease_until",
                (host, address, now, lease_until),
            )

        await self._do(operation)

    async def renew_host(self, host: str, lease_until: float) -> None:
        def operation(db: sqlite3.Connection) -> None:
            db.execute("UPDATE hosts SET lease_until=? WHERE id=?", (lease_until, host))

        await self._do(operation)

    async def hosts(self) -> list[HostRecord]:
        def operation(db: sqlite3.Connection) -> list[HostRecord]:
            rows = db.execute(
                "SELECT id, address, started, lease_until FROM hosts ORDER BY started"
            ).fetchall()
            return [HostRecord(*row) for row in rows]

        return await self._read(operation)

    async def claim(self, instance_id: str, host: str, now: float) -> tuple[InstanceRecord, bool]:
        def operation(db: sqlite3.Connection) -> tuple[InstanceRecord, bool]:
            # one statement: the check and the claim cannot be split by another claim
            row = db.execute(
                f"UPDATE instances SET owner = :host, generation = generation + 1 "
                f"WHERE id = :id AND {_RUNNABLE} AND {_UNOWNED} RETURNING {_INSTANCE_FIELDS}",
                {"host": host, "now": now, "id": instance_id},
            ).fetchone()
            if row is not None:
                return _instance(row), True
            row = db.execute(
                f"SELECT {_INSTANCE_FIELDS} FROM instances WHERE id=?", (instance_id,)
            ).fetchone()
            if row is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            return _instance(row), False

        return await self._do(operation)

    async def claimable(self, host: str, now: float, limit: int) -> list[tuple[str, str | None]]:
        def operation(db: sqlite3.Connection) -> list[tuple[str, str | None]]:
            rows = db.execute(
                f"SELECT id, tenant FROM instances WHERE {_RUNNABLE} AND {_ORPHANED} "
                "ORDER BY COALESCE(wake_at, created) LIMIT :limit",
                {"host": host, "now": now, "limit": limit},
            ).fetchall()
            return [(row[0], row[1]) for row in rows]

        return await self._read(operation)

    async def request_pause(self, instance_id: str, now: float) -> str:
        def operation(db: sqlite3.Connection) -> str:
            row = db.execute(
                "SELECT status, owner IS NOT NULL AND EXISTS (SELECT 1 FROM hosts WHERE "
                "hosts.id = instances.owner AND hosts.lease_until >= ?) FROM instances "
                "WHERE id=?",
                (now, instance_id),
            ).fetchone()
            if row is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            status, running = row
            if status in _FINISHED:
                raise InvalidTransition(
                    f"instance {instance_id!r} is {status}: it cannot be paused "
                    "(restart it to run it again)"
                )
            if status in ("paused", "waitingForPause"):
                return str(status)
            wanted = "waitingForPause" if running else "paused"
            _update(db, instance_id, {"status": wanted, "updated": now})
            return wanted

        return await self._do(operation)

    # --- metrics ---------------------------------------------------------------------------------

    async def add_metrics(self, rows: list[tuple[str, int, str, float, float]]) -> None:
        def operation(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO metrics (tenant, minute, name, count, total) VALUES (?,?,?,?,?) "
                "ON CONFLICT (tenant, minute, name) DO UPDATE SET "
                "count = count + excluded.count, total = total + excluded.total",
                rows,
            )

        await self._do(operation)

    async def metrics(self, since_minute: int = 0) -> list[tuple[str, int, str, float, float]]:
        def operation(db: sqlite3.Connection) -> list[tuple[str, int, str, float, float]]:
            rows = db.execute(
                "SELECT tenant, minute, name, count, total FROM metrics WHERE minute>=? "
                "ORDER BY minute, tenant, name",
                (since_minute,),
            ).fetchall()
            return [tuple(row) for row in rows]

        return await self._read(operation)

    # --- bulk reads ------------------------------------------------------------------------------

    async def all_instances(self, after: str = "", limit: int = 500) -> list[InstanceRecord]:
        def operation(db: sqlite3.Connection) -> list[InstanceRecord]:
            # keyset paging on the primary key: each page is an index range, never an OFFSET
            rows = db.execute(
                f"SELECT {_INSTANCE_FIELDS} FROM instances WHERE id>? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
            return [_instance(row) for row in rows]

        return await self._read(operation)

    async def events(self, instance_id: str) -> list[EventRecord]:
        def operation(db: sqlite3.Connection) -> list[EventRecord]:
            rows = db.execute(
                "SELECT instance_id, seq, type, payload, timestamp FROM events "
                "WHERE instance_id=? ORDER BY seq",
                (instance_id,),
            ).fetchall()
            return [EventRecord(*row) for row in rows]

        return await self._read(operation)


def _check_fields(fields: dict[str, object]) -> None:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise StoreError(f"cannot update instance fields {sorted(unknown)}")


def _update(db: sqlite3.Connection, instance_id: str, fields: dict[str, object]) -> None:
    assignments = ", ".join(f"{name}=?" for name in fields)
    cursor = db.execute(
        f"UPDATE instances SET {assignments} WHERE id=?", (*fields.values(), instance_id)
    )
    if cursor.rowcount == 0:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")


def _append_history(db: sqlite3.Connection, instance_id: str, rows: list[HistoryRow]) -> None:
    (seq,) = db.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM history WHERE instance_id=?", (instance_id,)
    ).fetchone()
    db.executemany(
        "INSERT INTO history (instance_id, seq, at, kind, detail) VALUES (?,?,?,?,?)",
        [(instance_id, seq + n, at, kind, detail) for n, (at, kind, detail) in enumerate(rows, 1)],
    )


def _check_generation(db: sqlite3.Connection, instance_id: str, generation: int) -> str:
    """The instance's status, if it still has `generation`; else `StaleGeneration`."""
    row = db.execute(
        "SELECT generation, status FROM instances WHERE id=?", (instance_id,)
    ).fetchone()
    if row is None or row[0] != generation:
        raise StaleGeneration(
            f"instance {instance_id!r} was terminated, restarted, deleted or taken over since "
            "this wake-up began; nothing was written"
        )
    return str(row[1])


def _next_generation(db: sqlite3.Connection, instance_id: str) -> int:
    # RETURNING: the read and the increment are one statement, inside the caller's transaction
    row = db.execute(
        "UPDATE instances SET generation = generation + 1 WHERE id=? RETURNING generation",
        (instance_id,),
    ).fetchone()
    if row is None:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")
    return int(row[0])


def _put_step(db: sqlite3.Connection, step: StepRecord) -> None:
    # REPLACE: a pending step (retrying, sleeping, waiting) is overwritten by its next state
    db.execute(
        f"INSERT OR REPLACE INTO steps ({_STEP_FIELDS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            step.instance_id,
            step.position,
            step.kind,
            step.name,
            step.occurrence,
            step.status,
            step.result,
            step.error,
            step.attempts,
            step.config,
            step.wake_at,
        ),
    )


def _insert_event(
    db: sqlite3.Connection, instance_id: str, type: str, payload: bytes, timestamp: float
) -> int:
    (seq,) = db.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE instance_id=?", (instance_id,)
    ).fetchone()
    db.execute(
        "INSERT INTO events (instance_id, seq, type, payload, timestamp) VALUES (?,?,?,?,?)",
        (instance_id, seq, type, payload, timestamp),
    )
    return int(seq)


def _take_event(db: sqlite3.Connection, instance_id: str, type: str) -> EventRecord | None:
    row = db.execute(
        "SELECT instance_id, seq, type, payload, timestamp FROM events "
        "WHERE instance_id=? AND type=? ORDER BY seq LIMIT 1",
        (instance_id, type),
    ).fetchone()
    if row is None:
        return None
    db.execute("DELETE FROM events WHERE instance_id=? AND seq=?", (instance_id, row[1]))
    return EventRecord(*row)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
