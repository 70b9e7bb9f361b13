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

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from dynworkers.engine.errors import InvalidTransition
from dynworkers.engine.sqlite_db import SQLiteDatabase
from dynworkers.engine.sqlite_rows import (
    FINISHED,
    INSTANCE_FIELDS,
    ORPHANED,
    RUNNABLE,
    STEP_FIELDS,
    UNOWNED,
    append_history,
    check_fields,
    check_generation,
    claim_one,
    insert_event,
    instance_record,
    next_generation,
    put_step,
    put_step_fenced,
    steps_of,
    take_event,
    update,
)
from dynworkers.engine.sqlite_schema import MIGRATIONS
from dynworkers.engine.store import (
    Claim,
    EventRecord,
    HistoryRecord,
    HistoryRow,
    HostRecord,
    InstanceNotFound,
    InstanceRecord,
    StepRecord,
    Store,
    settle_pause,
)

__all__ = ["MIGRATIONS", "SQLiteStore"]

T = TypeVar("T")


class SQLiteStore(Store):
    def __init__(self, path: str | Path, durability: str = "full") -> None:
        self.db = SQLiteDatabase(path, durability)
        self.path = self.db.path
        self.durability = self.db.durability

    @property
    def commits(self) -> int:
        """Transactions committed: the group-commit figure."""
        return self.db.commits

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def _do(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await self.db.write(operation)

    async def _read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await self.db.read(operation)

    # --- instances -------------------------------------------------------------------------------

    async def create_instances(self, records: list[InstanceRecord]) -> list[str]:
        def operation(db: sqlite3.Connection) -> list[str]:
            created = []
            for r in records:
                # OR IGNORE: an id that exists is skipped, as create_batch promises
                cursor = db.execute(
                    f"INSERT OR IGNORE INTO instances ({INSTANCE_FIELDS}) "
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
                f"SELECT {INSTANCE_FIELDS} FROM instances WHERE id=?", (instance_id,)
            ).fetchone()
            if row is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            return instance_record(row)

        return await self._read(operation)

    async def update_instance(self, instance_id: str, **fields: object) -> None:
        check_fields(fields)
        await self._do(lambda db: update(db, instance_id, fields))

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
                f"SELECT {INSTANCE_FIELDS} FROM instances {where} ORDER BY created LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [instance_record(row) for row in rows]

        return await self._read(operation)

    async def due_instances(self, now: float, limit: int) -> list[InstanceRecord]:
        def operation(db: sqlite3.Connection) -> list[InstanceRecord]:
            rows = db.execute(
                f"SELECT {INSTANCE_FIELDS} FROM instances "
                "WHERE status='queued' OR (status='waiting' AND wake_at<=?) "
                "ORDER BY COALESCE(wake_at, created) LIMIT ?",
                (now, limit),
            ).fetchall()
            return [instance_record(row) for row in rows]

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
                f"SELECT {STEP_FIELDS} FROM steps WHERE instance_id=? ORDER BY position",
                (instance_id,),
            ).fetchall()
            return [StepRecord(*row) for row in rows]

        return await self._read(operation)

    async def put_step(self, step: StepRecord) -> None:
        await self._do(lambda db: put_step(db, step))

    async def record(
        self,
        step: StepRecord | None,
        instance_id: str,
        *,
        generation: int | None = None,
        history: list[HistoryRow] | None = None,
        **fields: object,
    ) -> None:
        check_fields(fields)

        def operation(db: sqlite3.Connection) -> None:
            if step is not None and generation is not None and not fields:
                # a step of a running wake-up: the fence and the write are one statement
                put_step_fenced(db, step, instance_id, generation)
            else:
                values = fields
                if generation is not None:
                    values = settle_pause(check_generation(db, instance_id, generation), fields)
                if values:
                    update(db, instance_id, values)
                if step is not None:
                    put_step(db, step)
            if history:
                append_history(db, instance_id, history)

        await self._do(operation)

    async def add_history(self, instance_id: str, rows: list[HistoryRow]) -> None:
        def operation(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM instances WHERE id=?", (instance_id,)).fetchone() is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            append_history(db, instance_id, rows)

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
        check_fields(fields)
        instance_id = pending.instance_id

        def operation(db: sqlite3.Connection) -> EventRecord | None:
            values = fields
            if generation is not None:
                values = settle_pause(check_generation(db, instance_id, generation), fields)
            # one transaction with deliver_event's: the event is either buffered now (taken
            # here) or delivered after this commit (and then finds the instance waiting)
            event = take_event(db, instance_id, type)
            if event is not None:
                put_step(db, replace(pending, status="complete", result=encode(event)))
                return event
            if values:
                update(db, instance_id, values)
            put_step(db, pending)
            return None

        return await self._do(operation)

    async def fence(self, instance_id: str, **fields: object) -> int:
        check_fields(fields)

        def operation(db: sqlite3.Connection) -> int:
            generation = next_generation(db, instance_id)
            if fields:
                update(db, instance_id, fields)
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
            return insert_event(db, instance_id, type, payload, timestamp)

        return await self._do(operation)

    async def take_event(self, instance_id: str, type: str) -> EventRecord | None:
        return await self._do(lambda db: take_event(db, instance_id, type))

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
            if status in FINISHED:
                raise InvalidTransition(
                    f"instance {instance_id!r} is {status}: it takes no more events "
                    "(restart it first, or create a new one)"
                )
            insert_event(db, instance_id, type, payload, timestamp)
            if status == "waiting" and waiting_for == type:
                # the same transaction: an event can never land between "waits" and "woken"
                update(
                    db,
                    instance_id,
                    {"status": "queued", "wake_at": None, "waiting_for": None, "updated": now},
                )
                return True
            return False

        return await self._do(operation)

    async def restart(self, instance_id: str, position: int, now: float) -> int:
        def operation(db: sqlite3.Connection) -> int:
            generation = next_generation(db, instance_id)
            update(
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
                f"WHERE id = :id AND {RUNNABLE} AND {UNOWNED} RETURNING {INSTANCE_FIELDS}",
                {"host": host, "now": now, "id": instance_id},
            ).fetchone()
            if row is not None:
                return instance_record(row), True
            row = db.execute(
                f"SELECT {INSTANCE_FIELDS} FROM instances WHERE id=?", (instance_id,)
            ).fetchone()
            if row is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            return instance_record(row), False

        # not durable on its own (engine.sqlite_db): one process owns the file, so a claim only
        # matters while it lives, and the wake-up's first durable write makes it durable too
        return await self.db.write(operation, durable=False)

    async def claim_batch(self, instance_ids: list[str], host: str, now: float) -> list[Claim]:
        def operation(db: sqlite3.Connection) -> list[tuple[InstanceRecord | None, bool]]:
            return [claim_one(db, instance_id, host, now) for instance_id in instance_ids]

        # as claim: see its comment. The steps are read after the claim committed, on the
        # reader: a claim holds the writer (with durability "process", the loop) only briefly
        claims = await self.db.write(operation, durable=False)
        claimed = [record.id for record, won in claims if record is not None and won]
        steps = await self._read(lambda db: steps_of(db, claimed)) if claimed else {}
        return [
            (record, won, steps.get(record.id, []) if record is not None and won else [])
            for record, won in claims
        ]

    async def claimable(self, host: str, now: float, limit: int) -> list[tuple[str, str | None]]:
        def operation(db: sqlite3.Connection) -> list[tuple[str, str | None]]:
            rows = db.execute(
                f"SELECT id, tenant FROM instances WHERE {RUNNABLE} AND {ORPHANED} "
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
            if status in FINISHED:
                raise InvalidTransition(
                    f"instance {instance_id!r} is {status}: it cannot be paused "
                    "(restart it to run it again)"
                )
            if status in ("paused", "waitingForPause"):
                return str(status)
            wanted = "waitingForPause" if running else "paused"
            update(db, instance_id, {"status": wanted, "updated": now})
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
                f"SELECT {INSTANCE_FIELDS} FROM instances WHERE id>? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
            return [instance_record(row) for row in rows]

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
