"""The SQL that reads and writes the engine's rows in SQLite, one function per statement.

Runs on the store's writer or reader thread (engine.sqlite_db), inside the transaction it is
given; commits nothing. Errors: `InstanceNotFound` when the instance row is missing,
`StaleGeneration` for a fenced write that lost, `StoreError` for an unknown field; SQLite's own
errors propagate to the thread, which types them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from dynworkers.engine.store import (
    EventRecord,
    HistoryRow,
    InstanceNotFound,
    InstanceRecord,
    StaleGeneration,
    StepRecord,
    StoreError,
)

INSTANCE_FIELDS = (
    "id, workflow, status, params, created, updated, tenant, version, output, error, wake_at, "
    "waiting_for, generation, owner, parent"
)
#: a claim holds while its owner's lease is ahead of :now (no owner: nobody runs it)
UNOWNED = (
    "(owner IS NULL OR owner = :host OR NOT EXISTS "
    "(SELECT 1 FROM hosts WHERE hosts.id = instances.owner AND hosts.lease_until >= :now))"
)
#: owned by nobody live, not even this host (whose own running wake-ups it must not disturb)
ORPHANED = (
    "(owner IS NULL OR NOT EXISTS "
    "(SELECT 1 FROM hosts WHERE hosts.id = instances.owner AND hosts.lease_until >= :now))"
)
#: runnable now: queued, or waiting with no wake time or one that has passed
RUNNABLE = "(status = 'queued' OR (status = 'waiting' AND (wake_at IS NULL OR wake_at <= :now)))"
STEP_FIELDS = (
    "instance_id, position, kind, name, occurrence, status, result, error, attempts, config, "
    "wake_at"
)
UPDATABLE = frozenset(
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
FINISHED = ("complete", "errored", "terminated")


def instance_record(row: tuple[Any, ...]) -> InstanceRecord:
    return InstanceRecord(*row)


def check_fields(fields: dict[str, object]) -> None:
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise StoreError(f"cannot update instance fields {sorted(unknown)}")


def update(db: sqlite3.Connection, instance_id: str, fields: dict[str, object]) -> None:
    assignments = ", ".join(f"{name}=?" for name in fields)
    cursor = db.execute(
        f"UPDATE instances SET {assignments} WHERE id=?", (*fields.values(), instance_id)
    )
    if cursor.rowcount == 0:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")


def append_history(db: sqlite3.Connection, instance_id: str, rows: list[HistoryRow]) -> None:
    # one statement a row: the next seq is read and used by the insert itself (primary key
    # (instance_id, seq): MAX is the last entry of that instance's index range)
    for at, kind, detail in rows:
        db.execute(
            "INSERT INTO history (instance_id, seq, at, kind, detail) "
            "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM history WHERE instance_id=?",
            (instance_id, at, kind, detail, instance_id),
        )


def check_generation(db: sqlite3.Connection, instance_id: str, generation: int) -> str:
    """The instance's status, if it still has `generation`; else `StaleGeneration`."""
    row = db.execute(
        "SELECT generation, status FROM instances WHERE id=?", (instance_id,)
    ).fetchone()
    if row is None or row[0] != generation:
        raise _stale(instance_id)
    return str(row[1])


def _stale(instance_id: str) -> StaleGeneration:
    return StaleGeneration(
        f"instance {instance_id!r} was terminated, restarted, deleted or taken over since "
        "this wake-up began; nothing was written"
    )


def next_generation(db: sqlite3.Connection, instance_id: str) -> int:
    # RETURNING: the read and the increment are one statement, inside the caller's transaction
    row = db.execute(
        "UPDATE instances SET generation = generation + 1 WHERE id=? RETURNING generation",
        (instance_id,),
    ).fetchone()
    if row is None:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")
    return int(row[0])


def put_step(db: sqlite3.Connection, step: StepRecord) -> None:
    # REPLACE: a pending step (retrying, sleeping, waiting) is overwritten by its next state
    db.execute(f"INSERT OR REPLACE INTO steps ({STEP_FIELDS}) VALUES ({_STEP_VALUES})", _step(step))


def put_step_fenced(
    db: sqlite3.Connection, step: StepRecord, instance_id: str, generation: int
) -> None:
    """`put_step` if instance `instance_id` still has `generation`, in one statement; else
    `StaleGeneration` and nothing written (a missing instance has no generation)."""
    cursor = db.execute(
        f"INSERT OR REPLACE INTO steps ({STEP_FIELDS}) SELECT {_STEP_VALUES} "
        "WHERE EXISTS (SELECT 1 FROM instances WHERE id=? AND generation=?)",
        (*_step(step), instance_id, generation),
    )
    if cursor.rowcount == 0:
        raise _stale(instance_id)


_STEP_VALUES = "?,?,?,?,?,?,?,?,?,?,?"


def _step(step: StepRecord) -> tuple[object, ...]:
    return (
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
    )


def insert_event(
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


def take_event(db: sqlite3.Connection, instance_id: str, type: str) -> EventRecord | None:
    row = db.execute(
        "SELECT instance_id, seq, type, payload, timestamp FROM events "
        "WHERE instance_id=? AND type=? ORDER BY seq LIMIT 1",
        (instance_id, type),
    ).fetchone()
    if row is None:
        return None
    db.execute("DELETE FROM events WHERE instance_id=? AND seq=?", (instance_id, row[1]))
    return EventRecord(*row)


def claim_one(
    db: sqlite3.Connection, instance_id: str, host: str, now: float
) -> tuple[InstanceRecord | None, bool]:
    """One entry of a batch claim: the record (None: no such instance) and whether `host`
    claimed it. Its steps are read after the claim commits (`steps_of`, on the reader), so
    that a claim's transaction stays short however many steps an instance holds."""
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
    return (None if row is None else instance_record(row)), False


def steps_of(db: sqlite3.Connection, instance_ids: list[str]) -> dict[str, list[StepRecord]]:
    """The steps of each instance, in position order, in one read."""
    found: dict[str, list[StepRecord]] = {instance_id: [] for instance_id in instance_ids}
    for start in range(0, len(instance_ids), 500):  # within SQLite's bound on parameters
        chunk = instance_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in db.execute(
            f"SELECT {STEP_FIELDS} FROM steps WHERE instance_id IN ({marks}) "
            "ORDER BY instance_id, position",
            chunk,
        ):
            found[row[0]].append(StepRecord(*row))
    return found
