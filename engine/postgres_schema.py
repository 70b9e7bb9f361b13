"""PostgreSQL schema and connection helpers shared by the store (engine.postgres_store) and the
KV (runtime.kv_postgres).

Host side, on the event loop. Imported only when a store URL is `postgresql://` (it imports
psycopg). Each component ("engine", "kv") has its own forward-only list of migrations and its own
row in `schema_version`; `migrate` applies the missing ones in one transaction under an advisory
lock, so that several hosts starting at once migrate once. A database whose version is newer than
this dynworkers is refused with `StoreError`. `connect` turns every connection failure into
`StoreError` with one line saying what to do.
"""

from __future__ import annotations

import re

import psycopg

from dynworkers.engine.store import StoreError

#: seconds to wait for the server when connecting, and for a pooled connection
CONNECT_TIMEOUT_S = 5.0
#: the advisory lock key migrations hold (any constant; "dynw" in ASCII)
MIGRATION_LOCK = 0x64796E77

#: The engine's schema; each entry moves it from version N to N+1. Never edit one that has
#: shipped: append. Columns a later feature needs (an instance generation, an owner and lease)
#: come as a new entry with ALTER TABLE.
ENGINE_MIGRATIONS: list[str] = [
    """
    CREATE TABLE instances (
        id text PRIMARY KEY,
        workflow text NOT NULL,
        status text NOT NULL,
        params bytea NOT NULL,
        created double precision NOT NULL,
        updated double precision NOT NULL,
        tenant text,
        version text,
        output bytea,
        error bytea,
        wake_at double precision,
        waiting_for text
    );
    -- the scheduler's question: what is runnable now, oldest first
    CREATE INDEX instances_due ON instances (status, wake_at);
    CREATE INDEX instances_tenant ON instances (tenant, created);
    CREATE TABLE steps (
        instance_id text NOT NULL,
        position integer NOT NULL,
        kind text NOT NULL,
        name text NOT NULL,
        occurrence integer NOT NULL,
        status text NOT NULL,
        result bytea,
        error bytea,
        attempts integer NOT NULL,
        config bytea,
        wake_at double precision,
        PRIMARY KEY (instance_id, position)
    );
    CREATE TABLE events (
        instance_id text NOT NULL,
        seq integer NOT NULL,
        type text NOT NULL,
        payload bytea NOT NULL,
        timestamp double precision NOT NULL,
        PRIMARY KEY (instance_id, seq)
    );
    -- hot-path figures, summed per tenant per minute so that history survives a restart
    CREATE TABLE metrics (
        tenant text NOT NULL,
        minute bigint NOT NULL,
        name text NOT NULL,
        count double precision NOT NULL,
        total double precision NOT NULL,
        PRIMARY KEY (tenant, minute, name)
    );
    """,
    """
    -- the fence: claims, terminate, restart and delete move it on
    ALTER TABLE instances ADD COLUMN generation integer NOT NULL DEFAULT 0;
    -- claims: the host whose wake-up runs the instance, lapsing with that host's lease
    ALTER TABLE instances ADD COLUMN owner text;
    CREATE TABLE hosts (
        id text PRIMARY KEY,
        address text NOT NULL,
        started double precision NOT NULL,
        lease_until double precision NOT NULL
    );
    """,
    """
    -- child workflows: the instance that started this one
    ALTER TABLE instances ADD COLUMN parent text;
    CREATE INDEX instances_parent ON instances (parent) WHERE parent IS NOT NULL;
    -- retention: finished instances by age
    CREATE INDEX instances_finished ON instances (updated)
        WHERE status IN ('complete', 'errored', 'terminated');
    """,
    """
    -- what an instance did: attempts, sleeps, waits, events, operations, oldest first
    CREATE TABLE history (
        instance_id text NOT NULL,
        seq integer NOT NULL,
        at double precision NOT NULL,
        kind text NOT NULL,
        detail bytea NOT NULL,
        PRIMARY KEY (instance_id, seq)
    );
    """,
]


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def reason(exc: BaseException) -> str:
    """The first line of a driver error: what happened, without libpq's hint lines."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def connect(url: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """One autocommit connection, or StoreError saying what to check."""
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=max(1, round(CONNECT_TIMEOUT_S))
        )
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot connect to PostgreSQL at {redact(url)}: {reason(exc)}: check the URL "
            "(postgresql://user:password@host:port/database) and that the server is running"
        ) from None


async def migrate(
    conn: psycopg.AsyncConnection[tuple[object, ...]], component: str, migrations: list[str]
) -> int:
    """Bring `component`'s tables to the newest version; the version it had before."""
    async with conn.transaction():
        # transaction-scoped lock: hosts starting together migrate one after the other
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(component text PRIMARY KEY, version integer NOT NULL)"
        )
        cursor = await conn.execute(
            "SELECT version FROM schema_version WHERE component=%s", (component,)
        )
        row = await cursor.fetchone()
        version = int(str(row[0])) if row is not None else 0
        if version > len(migrations):
            raise StoreError(
                f"the {component} tables have schema version {version}, newer than this "
                f"dynworkers ({len(migrations)}): upgrade dynworkers or use another database"
            )
        for number in range(version, len(migrations)):
            # no parameters: psycopg sends the migration's statements as one simple query
            await conn.execute(migrations[number].encode())
        # DDL is transactional in PostgreSQL: the tables and their version commit together
        await conn.execute(
            "INSERT INTO schema_version (component, version) VALUES (%s, %s) "
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component, len(migrations)),
        )
    return version
