"""The SQL that reads and writes the engine's rows in PostgreSQL, one function per statement.

Host side; run by engine.postgres_store's operations inside the writer's transaction (each
function takes the connection it is given and commits nothing). Errors: `InstanceNotFound` when
the instance row is missing; driver errors propagate to the writer, which types them.
"""

from __future__ import annotations

from typing import Any

import psycopg

from dynworkers.engine.store import (
    EventRecord,
    InstanceNotFound,
    InstanceRecord,
    StaleGeneration,
    StepRecord,
    StoreError,
)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

INSTANCE_FIELDS = (
    "id, workflow, status, params, created, updated, tenant, version, output, error, wake_at, "
    "waiting_for, generation, owner, parent"
)
STEP_FIELDS = (
    "instance_id, position, kind, name, occurrence, status, result, error, attempts, config, "
    "wake_at"
)
UPDATABLE = frozenset(
    {"status", "updated", "output", "error", "wake_at", "version", "params", "tenant"}
    | {"waiting_for", "owner"}
)
FINISHED = ("complete", "errored", "terminated")


def instance_values(r: InstanceRecord) -> tuple[object, ...]:
    return (
        r.id, r.workflow, r.status, r.params, r.created, r.updated, r.tenant, r.version,
        r.output, r.error, r.wake_at, r.waiting_for, r.generation, r.owner, r.parent,
    )  # fmt: skip


def step_values(s: StepRecord) -> tuple[object, ...]:
    return (
        s.instance_id, s.position, s.kind, s.name, s.occurrence, s.status, s.result, s.error,
        s.attempts, s.config, s.wake_at,
    )  # fmt: skip


def check_fields(fields: dict[str, object]) -> None:
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise StoreError(f"cannot update instance fields {sorted(unknown)}")


async def update(db: Connection, instance_id: str, fields: dict[str, object]) -> None:
    assignments = ", ".join(f"{name}=%s" for name in fields)  # names from UPDATABLE only
    cursor = await db.execute(
        f"UPDATE instances SET {assignments} WHERE id=%s", (*fields.values(), instance_id)
    )
    if cursor.rowcount == 0:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")


async def lock_instance(db: Connection, instance_id: str) -> tuple[str, str | None]:
    # FOR UPDATE: writers to one instance's events queue on its row, on every host, so
    # seq = max + 1 never collides and a wake-up cannot race the instance's own update
    cursor = await db.execute(
        "SELECT status, waiting_for FROM instances WHERE id=%s FOR UPDATE", (instance_id,)
    )
    row = await cursor.fetchone()
    if row is None:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")
    return row[0], row[1]


async def check_generation(db: Connection, instance_id: str, generation: int) -> str:
    """The instance's status, if it still has `generation`; else `StaleGeneration`."""
    # FOR UPDATE: a claim, terminate or restart of another host waits for this write's commit
    cursor = await db.execute(
        "SELECT generation, status FROM instances WHERE id=%s FOR UPDATE", (instance_id,)
    )
    row = await cursor.fetchone()
    if row is None or row[0] != generation:
        raise StaleGeneration(
            f"instance {instance_id!r} was terminated, restarted, deleted or taken over since "
            "this wake-up began; nothing was written"
        )
    return str(row[1])


async def next_generation(db: Connection, instance_id: str) -> int:
    cursor = await db.execute(
        "UPDATE instances SET generation = generation + 1 WHERE id=%s RETURNING generation",
        (instance_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")
    return int(row[0])


async def append_history(
    db: Connection, instance_id: str, rows: list[tuple[float, str, bytes]]
) -> None:
    # the caller holds the instance's row lock (a fenced write or lock_instance), so no other
    # writer computes the same seq
    cursor = await db.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM history WHERE instance_id=%s", (instance_id,)
    )
    row = await cursor.fetchone()
    seq = int(row[0]) if row else 0
    async with db.cursor() as many:
        await many.executemany(
            "INSERT INTO history (instance_id, seq, at, kind, detail) VALUES (%s,%s,%s,%s,%s)",
            [
                (instance_id, seq + n, at, kind, detail)
                for n, (at, kind, detail) in enumerate(rows, 1)
            ],
        )


async def put_step(db: Connection, step: StepRecord) -> None:
    # upsert: a pending step (retrying, sleeping, waiting) is overwritten by its next state
    await db.execute(
        f"INSERT INTO steps ({STEP_FIELDS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
        "ON CONFLICT (instance_id, position) DO UPDATE SET kind=excluded.kind, "
        "name=excluded.name, occurrence=excluded.occurrence, status=excluded.status, "
        "result=excluded.result, error=excluded.error, attempts=excluded.attempts, "
        "config=excluded.config, wake_at=excluded.wake_at",
        step_values(step),
    )


async def insert_event(
    db: Connection, instance_id: str, type: str, payload: bytes, timestamp: float
) -> int:
    # the caller holds the instance's row lock, so no other writer computes the same seq
    cursor = await db.execute(
        "INSERT INTO events (instance_id, seq, type, payload, timestamp) "
        "SELECT %s, COALESCE(MAX(seq), 0) + 1, %s, %s, %s FROM events WHERE instance_id=%s "
        "RETURNING seq",
        (instance_id, type, payload, timestamp, instance_id),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def take_event(db: Connection, instance_id: str, type: str) -> EventRecord | None:
    # one statement: the oldest event of that type leaves the buffer and comes back to us
    cursor = await db.execute(
        "DELETE FROM events WHERE instance_id=%s AND seq=(SELECT seq FROM events "
        "WHERE instance_id=%s AND type=%s ORDER BY seq LIMIT 1) "
        "RETURNING instance_id, seq, type, payload, timestamp",
        (instance_id, instance_id, type),
    )
    row = await cursor.fetchone()
    return None if row is None else EventRecord(*row)
