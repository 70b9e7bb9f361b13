"""The PostgreSQL store: the engine's `Store` on psycopg 3, for several hosts on one database.

Host side, on the caller's event loop; imported only for a `postgresql://` or `postgres://` URL
(`open_store`). The connection pool, the group-commit writer (a caller is answered once the
commit holding its record is done) and recovery after a lost server are engine.postgres_db's;
the schema and its migrations are engine.postgres_schema's; the row statements are
engine.postgres_rows'. This module maps each `Store` method to one `db.write` (one operation in
the next group commit, in its own savepoint) or one `db.read` (a pooled connection, autocommit).

Errors are the contract's: `InstanceNotFound`, `InvalidTransition`, and `StoreError` naming the
operation for everything the database does wrong (unreachable, lost during commit, refused).
Hosts, claims, pauses and notifications between hosts are engine.postgres_hosts'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dynworkers.engine import postgres_hosts as hosts
from dynworkers.engine import postgres_rows as rows
from dynworkers.engine.errors import InvalidTransition
from dynworkers.engine.postgres_db import Database
from dynworkers.engine.postgres_rows import Connection
from dynworkers.engine.postgres_schema import ENGINE_MIGRATIONS
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


class PostgresStore(Store):
    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.url = url
        self.db = Database(url, "engine", ENGINE_MIGRATIONS, pool_size)
        self.listener = hosts.Listener(url)

    @property
    def commits(self) -> int:
        """Transactions committed: the group-commit figure."""
        return self.db.commits

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.listener.close()
        await self.db.close()

    # --- instances -------------------------------------------------------------------------------

    async def create_instances(self, records: list[InstanceRecord]) -> list[str]:
        unique = list({r.id: r for r in reversed(records)}.values())[::-1]  # first of each id

        async def operation(db: Connection) -> list[str]:
            inserted: set[str] = set()
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                values = ", ".join(["(" + ",".join(["%s"] * 15) + ")"] * len(chunk))
                params = [value for r in chunk for value in rows.instance_values(r)]
                # ON CONFLICT DO NOTHING: an id that exists is skipped, as create_batch promises
                cursor = await db.execute(
                    f"INSERT INTO instances ({rows.INSTANCE_FIELDS}) VALUES {values} "
                    "ON CONFLICT (id) DO NOTHING RETURNING id",
                    params,
                )
                inserted.update(row[0] for row in await cursor.fetchall())
            return [r.id for r in unique if r.id in inserted]

        return await self.db.write("create_instances", operation) if unique else []

    async def get_instance(self, instance_id: str) -> InstanceRecord:
        async def operation(db: Connection) -> InstanceRecord:
            cursor = await db.execute(
                f"SELECT {rows.INSTANCE_FIELDS} FROM instances WHERE id=%s", (instance_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            return InstanceRecord(*row)

        return await self.db.read("get_instance", operation)

    async def update_instance(self, instance_id: str, **fields: object) -> None:
        rows.check_fields(fields)
        await self.db.write("update_instance", lambda db: rows.update(db, instance_id, fields))

    async def delete_instance(self, instance_id: str) -> None:
        async def operation(db: Connection) -> None:
            cursor = await db.execute("DELETE FROM instances WHERE id=%s", (instance_id,))
            if cursor.rowcount == 0:
                raise InstanceNotFound(f"no workflow instance {instance_id!r}")
            await db.execute("DELETE FROM steps WHERE instance_id=%s", (instance_id,))
            await db.execute("DELETE FROM events WHERE instance_id=%s", (instance_id,))
            await db.execute("DELETE FROM history WHERE instance_id=%s", (instance_id,))

        await self.db.write("delete_instance", operation)

    async def list_instances(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InstanceRecord]:
        clauses, params = [], []
        if tenant is not None:
            clauses.append("tenant=%s")
            params.append(tenant)
        if status is not None:
            clauses.append("status=%s")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        async def operation(db: Connection) -> list[InstanceRecord]:
            cursor = await db.execute(
                f"SELECT {rows.INSTANCE_FIELDS} FROM instances {where} ORDER BY created LIMIT %s",
                (*params, limit),
            )
            return [InstanceRecord(*row) for row in await cursor.fetchall()]

        return await self.db.read("list_instances", operation)

    async def due_instances(self, now: float, limit: int) -> list[InstanceRecord]:
        async def operation(db: Connection) -> list[InstanceRecord]:
            cursor = await db.execute(
                f"SELECT {rows.INSTANCE_FIELDS} FROM instances "
                "WHERE status='queued' OR (status='waiting' AND wake_at<=%s) "
                "ORDER BY COALESCE(wake_at, created) LIMIT %s",
                (now, limit),
            )
            return [InstanceRecord(*row) for row in await cursor.fetchall()]

        return await self.db.read("due_instances", operation)

    async def count_by_status(self) -> dict[str, int]:
        async def operation(db: Connection) -> dict[str, int]:
            cursor = await db.execute("SELECT status, count(*) FROM instances GROUP BY status")
            return {status: int(count) for status, count in await cursor.fetchall()}

        return await self.db.read("count_by_status", operation)

    # --- steps -----------------------------------------------------------------------------------

    async def steps(self, instance_id: str) -> list[StepRecord]:
        async def operation(db: Connection) -> list[StepRecord]:
            cursor = await db.execute(
                f"SELECT {rows.STEP_FIELDS} FROM steps WHERE instance_id=%s ORDER BY position",
                (instance_id,),
            )
            return [StepRecord(*row) for row in await cursor.fetchall()]

        return await self.db.read("steps", operation)

    async def put_step(self, step: StepRecord) -> None:
        await self.db.write("put_step", lambda db: rows.put_step(db, step))

    async def record(
        self,
        step: StepRecord | None,
        instance_id: str,
        *,
        generation: int | None = None,
        history: list[HistoryRow] | None = None,
        **fields: object,
    ) -> None:
        rows.check_fields(fields)

        async def operation(db: Connection) -> None:
            values = fields
            if generation is not None:
                status = await rows.check_generation(db, instance_id, generation)
                values = settle_pause(status, fields)
            elif history:
                await rows.lock_instance(db, instance_id)
            if values:
                await rows.update(db, instance_id, values)
            if step is not None:
                await rows.put_step(db, step)
            if history:
                await rows.append_history(db, instance_id, history)

        await self.db.write("record", operation)

    async def add_history(self, instance_id: str, history: list[HistoryRow]) -> None:
        async def operation(db: Connection) -> None:
            await rows.lock_instance(db, instance_id)
            await rows.append_history(db, instance_id, history)

        if history:
            await self.db.write("add_history", operation)

    async def history(self, instance_id: str, limit: int = 10_000) -> list[HistoryRecord]:
        async def operation(db: Connection) -> list[HistoryRecord]:
            cursor = await db.execute(
                "SELECT instance_id, seq, at, kind, detail FROM history WHERE instance_id=%s "
                "ORDER BY seq LIMIT %s",
                (instance_id, limit),
            )
            return [HistoryRecord(*row) for row in await cursor.fetchall()]

        return await self.db.read("history", operation)

    async def wait_for_event(
        self,
        pending: StepRecord,
        type: str,
        encode: Callable[[EventRecord], bytes],
        *,
        generation: int | None = None,
        **fields: object,
    ) -> EventRecord | None:
        rows.check_fields(fields)
        instance_id = pending.instance_id

        async def operation(db: Connection) -> EventRecord | None:
            # the row lock orders this against deliver_event's (which takes it too): the event
            # is either buffered now (taken here) or delivered after (and finds us waiting)
            if generation is not None:
                status = await rows.check_generation(db, instance_id, generation)
                values = settle_pause(status, fields)
            else:
                await rows.lock_instance(db, instance_id)
                values = fields
            event = await rows.take_event(db, instance_id, type)
            if event is not None:
                await rows.put_step(db, replace(pending, status="complete", result=encode(event)))
                return event
            if values:
                await rows.update(db, instance_id, values)
            await rows.put_step(db, pending)
            return None

        return await self.db.write("wait_for_event", operation)

    async def fence(self, instance_id: str, **fields: object) -> int:
        rows.check_fields(fields)

        async def operation(db: Connection) -> int:
            generation = await rows.next_generation(db, instance_id)
            if fields:
                await rows.update(db, instance_id, fields)
            return generation

        return await self.db.write("fence", operation)

    async def delete_steps_from(self, instance_id: str, position: int) -> None:
        async def operation(db: Connection) -> None:
            await db.execute(
                "DELETE FROM steps WHERE instance_id=%s AND position>=%s", (instance_id, position)
            )

        await self.db.write("delete_steps_from", operation)

    # --- events ----------------------------------------------------------------------------------

    async def add_event(self, instance_id: str, type: str, payload: bytes, timestamp: float) -> int:
        async def operation(db: Connection) -> int:
            await rows.lock_instance(db, instance_id)
            return await rows.insert_event(db, instance_id, type, payload, timestamp)

        return await self.db.write("add_event", operation)

    async def take_event(self, instance_id: str, type: str) -> EventRecord | None:
        return await self.db.write("take_event", lambda db: rows.take_event(db, instance_id, type))

    async def deliver_event(
        self, instance_id: str, type: str, payload: bytes, timestamp: float, now: float
    ) -> bool:
        async def operation(db: Connection) -> bool:
            status, waiting_for = await rows.lock_instance(db, instance_id)
            if status in rows.FINISHED:
                raise InvalidTransition(
                    f"instance {instance_id!r} is {status}: it takes no more events "
                    "(restart it first, or create a new one)"
                )
            await rows.insert_event(db, instance_id, type, payload, timestamp)
            if status == "waiting" and waiting_for == type:
                # the row is locked: an event can never land between "waits" and "woken"
                await rows.update(
                    db,
                    instance_id,
                    {"status": "queued", "wake_at": None, "waiting_for": None, "updated": now},
                )
                return True
            return False

        return await self.db.write("deliver_event", operation)

    async def restart(self, instance_id: str, position: int, now: float) -> int:
        async def operation(db: Connection) -> int:
            generation = await rows.next_generation(db, instance_id)
            fields: dict[str, object] = {
                "owner": None,
                "status": "queued",
                "output": None,
                "error": None,
                "wake_at": None,
                "waiting_for": None,
                "updated": now,
            }
            await rows.update(db, instance_id, fields)
            await db.execute(
                "DELETE FROM steps WHERE instance_id=%s AND position>=%s", (instance_id, position)
            )
            return generation

        return await self.db.write("restart", operation)

    async def unfinished(self) -> list[tuple[str, str, str | None, float | None]]:
        async def operation(db: Connection) -> list[tuple[str, str, str | None, float | None]]:
            cursor = await db.execute(
                "SELECT id, status, tenant, wake_at FROM instances "
                "WHERE status NOT IN ('complete', 'errored', 'terminated') ORDER BY created"
            )
            return [(row[0], row[1], row[2], row[3]) for row in await cursor.fetchall()]

        return await self.db.read("unfinished", operation)

    # --- children and retention ------------------------------------------------------------------

    async def children(self, parent: str) -> list[str]:
        async def operation(db: Connection) -> list[str]:
            cursor = await db.execute(
                "SELECT id FROM instances WHERE parent=%s "
                "AND status NOT IN ('complete', 'errored', 'terminated') ORDER BY created",
                (parent,),
            )
            return [row[0] for row in await cursor.fetchall()]

        return await self.db.read("children", operation)

    async def purge_finished(self, before: float, limit: int = 1000) -> int:
        async def operation(db: Connection) -> int:
            # SKIP LOCKED: hosts purging at once take different rows and never wait
            cursor = await db.execute(
                "DELETE FROM instances WHERE id IN (SELECT id FROM instances WHERE status IN "
                "('complete', 'errored', 'terminated') AND updated < %s ORDER BY updated "
                "LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
                (before, limit),
            )
            ids = [row[0] for row in await cursor.fetchall()]
            if ids:
                await db.execute("DELETE FROM steps WHERE instance_id = ANY(%s)", (ids,))
                await db.execute("DELETE FROM events WHERE instance_id = ANY(%s)", (ids,))
                await db.execute("DELETE FROM history WHERE instance_id = ANY(%s)", (ids,))
            return len(ids)

        return await self.db.write("purge_finished", operation)

    # --- hosts, claims and notifications ---------------------------------------------------------

    async def register_host(self, host: str, address: str, now: float, lease_until: float) -> None:
        await self.db.write(
            "register_host", lambda db: hosts.register_host(db, host, address, now, lease_until)
        )

    async def renew_host(self, host: str, lease_until: float) -> None:
        await self.db.write("renew_host", lambda db: hosts.renew_host(db, host, lease_until))

    async def hosts(self) -> list[HostRecord]:
        return await self.db.read("hosts", hosts.hosts)

    async def claim(self, instance_id: str, host: str, now: float) -> tuple[InstanceRecord, bool]:
        return await self.db.write("claim", lambda db: hosts.claim(db, instance_id, host, now))

    async def claim_batch(self, instance_ids: list[str], host: str, now: float) -> list[Claim]:
        return await self.db.write(
            "claim_batch", lambda db: hosts.claim_batch(db, instance_ids, host, now)
        )

    async def claimable(self, host: str, now: float, limit: int) -> list[tuple[str, str | None]]:
        return await self.db.write("claimable", lambda db: hosts.claimable(db, host, now, limit))

    async def request_pause(self, instance_id: str, now: float) -> str:
        return await self.db.write(
            "request_pause", lambda db: hosts.request_pause(db, instance_id, now)
        )

    async def notify(self, message: str) -> None:
        await self.db.write("notify", lambda db: hosts.notify(db, message))

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self.listener.callbacks.append(callback)
        self.listener.start()

    # --- metrics ---------------------------------------------------------------------------------

    async def add_metrics(self, rows: list[tuple[str, int, str, float, float]]) -> None:
        async def operation(db: Connection) -> None:
            async with db.cursor() as cursor:
                # ON CONFLICT: several hosts (or flushes) add to the same minute's running sums
                await cursor.executemany(
                    "INSERT INTO metrics (tenant, minute, name, count, total) "
                    "VALUES (%s,%s,%s,%s,%s) ON CONFLICT (tenant, minute, name) DO UPDATE SET "
                    "count = metrics.count + excluded.count, "
                    "total = metrics.total + excluded.total",
                    rows,
                )

        if rows:
            await self.db.write("add_metrics", operation)

    async def metrics(self, since_minute: int = 0) -> list[tuple[str, int, str, float, float]]:
        async def operation(db: Connection) -> list[tuple[str, int, str, float, float]]:
            cursor = await db.execute(
                "SELECT tenant, minute, name, count, total FROM metrics WHERE minute>=%s "
                "ORDER BY minute, tenant, name",
                (since_minute,),
            )
            return [(r[0], int(r[1]), r[2], r[3], r[4]) for r in await cursor.fetchall()]

        return await self.db.read("metrics", operation)

    # --- bulk reads ------------------------------------------------------------------------------

    async def all_instances(self, after: str = "", limit: int = 500) -> list[InstanceRecord]:
        async def operation(db: Connection) -> list[InstanceRecord]:
            # keyset paging on the primary key: each page is an index range, never an OFFSET
            # (the database's collation orders both the > and the ORDER BY: pages stay exact)
            cursor = await db.execute(
                f"SELECT {rows.INSTANCE_FIELDS} FROM instances WHERE id>%s ORDER BY id LIMIT %s",
                (after, limit),
            )
            return [InstanceRecord(*row) for row in await cursor.fetchall()]

        return await self.db.read("all_instances", operation)

    async def events(self, instance_id: str) -> list[EventRecord]:
        async def operation(db: Connection) -> list[EventRecord]:
            cursor = await db.execute(
                "SELECT instance_id, seq, type, payload, timestamp FROM events "
                "WHERE instance_id=%s ORDER BY seq",
                (instance_id,),
            )
            return [EventRecord(*row) for row in await cursor.fetchall()]

        return await self.db.read("events", operation)
