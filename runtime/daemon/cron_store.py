"""Where cron ticks are claimed: a small table in SQLite (one host) or PostgreSQL (several).

Host side, on the daemon's event loop. Owns two tables of its own, apart from the engine's store:
`cron_schedules` (per tenant and cron expression, the time the schedule was first seen) and
`cron_ticks` (per tenant, cron expression and scheduled time, the host that claimed the tick).
A tick is claimed by one conditional INSERT keyed by (tenant, cron, scheduled_time): the host
whose insert lands runs `scheduled`, every other host sees the row and does not. So each tick
runs once across every host sharing the store (at most once: a host that dies while running a
tick it claimed does not run it again, and nor does any other).

SQLite: `<state_dir>/crons.db`, written on the event loop (one short statement a tick: cron
granularity is a minute). PostgreSQL: the "crons" component (engine.postgres_db.Database, its own
schema_version row), so several daemons on one database share it. Failures are `StoreError`
(PostgreSQL unreachable) or `sqlite3.Error`; the scheduler logs them and tries the next tick.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dynworkers.engine.postgres_db import Connection, Database

#: ticks older than this (ms) behind the one just claimed are deleted: only the latest matters
KEEP_MS = 7 * 24 * 3600 * 1000

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS cron_schedules (
    tenant TEXT NOT NULL, cron TEXT NOT NULL, since_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, cron)
);
CREATE TABLE IF NOT EXISTS cron_ticks (
    tenant TEXT NOT NULL, cron TEXT NOT NULL, scheduled_ms INTEGER NOT NULL, host TEXT NOT NULL,
    PRIMARY KEY (tenant, cron, scheduled_ms)
);
"""

#: the "crons" component's schema in PostgreSQL: append only, never edit
CRON_MIGRATIONS: list[str] = [
    """
    CREATE TABLE cron_schedules (
        tenant text NOT NULL, cron text NOT NULL, since_ms bigint NOT NULL,
        PRIMARY KEY (tenant, cron)
    );
    CREATE TABLE cron_ticks (
        tenant text NOT NULL, cron text NOT NULL, scheduled_ms bigint NOT NULL,
        host text NOT NULL,
        PRIMARY KEY (tenant, cron, scheduled_ms)
    );
    """,
]


class CronStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def last(self, tenant: str, cron: str, now_ms: int) -> int:
        """Register the schedule (first seen now, if new); the latest tick claimed, or the time
        it was first seen when none was: the point after which ticks count as missed."""
        ...

    async def claim(self, tenant: str, cron: str, scheduled_ms: int, host: str) -> bool:
        """True for the one caller (of any host) that claims this tick."""
        ...


class SQLiteCronStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: one statement
        self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the claim
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps it consistent across a crash
        self._db.executescript(SQLITE_SCHEMA)

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("the cron store is not open")
        return self._db

    async def last(self, tenant: str, cron: str, now_ms: int) -> int:
        db = self._conn()
        # OR IGNORE: the first sighting is kept, so a restart does not move it forward
        db.execute("INSERT OR IGNORE INTO cron_schedules VALUES (?, ?, ?)", (tenant, cron, now_ms))
        row = db.execute(
            "SELECT max(s.since_ms, coalesce((SELECT max(scheduled_ms) FROM cron_ticks t "
            "WHERE t.tenant=s.tenant AND t.cron=s.cron), 0)) FROM cron_schedules s "
            "WHERE s.tenant=? AND s.cron=?",
            (tenant, cron),
        ).fetchone()
        return int(row[0])

    async def claim(self, tenant: str, cron: str, scheduled_ms: int, host: str) -> bool:
        db = self._conn()
        # OR IGNORE on the primary key: the first claim of a tick wins, any later one changes 0
        cursor = db.execute(
            "INSERT OR IGNORE INTO cron_ticks VALUES (?, ?, ?, ?)",
            (tenant, cron, scheduled_ms, host),
        )
        if cursor.rowcount != 1:
            return False
        db.execute(
            "DELETE FROM cron_ticks WHERE tenant=? AND cron=? AND scheduled_ms<?",
            (tenant, cron, scheduled_ms - KEEP_MS),
        )
        return True


class PostgresCronStore:
    def __init__(self, url: str) -> None:
        from dynworkers.engine.postgres_db import Database

        self.db: Database = Database(url, "crons", CRON_MIGRATIONS, pool_size=2)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def last(self, tenant: str, cron: str, now_ms: int) -> int:
        async def operation(conn: Connection) -> int:
            # DO NOTHING: the first host to see the schedule sets when it began
            await conn.execute(
                "INSERT INTO cron_schedules VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (tenant, cron, now_ms),
            )
            cursor = await conn.execute(
                "SELECT greatest(s.since_ms, (SELECT max(scheduled_ms) FROM cron_ticks t "
                "WHERE t.tenant=s.tenant AND t.cron=s.cron)) FROM cron_schedules s "
                "WHERE s.tenant=%s AND s.cron=%s",
                (tenant, cron),
            )
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

        return await self.db.write("register a cron schedule", operation)

    async def claim(self, tenant: str, cron: str, scheduled_ms: int, host: str) -> bool:
        async def operation(conn: Connection) -> bool:
            # the primary key decides: one host's row lands, the others' do nothing
            cursor = await conn.execute(
                "INSERT INTO cron_ticks VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (tenant, cron, scheduled_ms, host),
            )
            if await cursor.fetchone() is None:
                return False
            await conn.execute(
                "DELETE FROM cron_ticks WHERE tenant=%s AND cron=%s AND scheduled_ms<%s",
                (tenant, cron, scheduled_ms - KEEP_MS),
            )
            return True

        return await self.db.write("claim a cron tick", operation)


def cron_store(store_url: str, state_dir: Path) -> CronStore:
    """PostgreSQL when the daemon's store is, else SQLite in the state directory."""
    if store_url.startswith(("postgresql://", "postgres://")):
        return PostgresCronStore(store_url)
    return SQLiteCronStore(state_dir / "crons.db")
