"""The SQLite store's schema: forward-only migrations, and applying them.

Runs on the writer thread when the store opens (engine.sqlite_db). The file's `user_version` is
its schema version; a file newer than this dynworkers is refused with `StoreError`. Each
migration is split on ";" into statements, so a comment in one must not hold a semicolon.
"""

from __future__ import annotations

import sqlite3

from dynworkers.engine.store import StoreError

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


def migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations the file lacks, each in a transaction of its own."""
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
