"""Tenant-scoped key-value storage: SQLite under the state directory, or PostgreSQL.

Host side, on the supervisor's event loop. `open_kv(store_url, state_dir)` picks the backend: a
`postgresql://` store URL puts the KV in that database (runtime.kv_postgres), so a tenant's KV
is the same from every host; anything else keeps it in `<state_dir>/kv.db` (SQLite: each
statement is a few microseconds on a local file; no thread needed). Every row is keyed by
(tenant, namespace, key): two tenants given the same namespace binding never see each other's
data, because the tenant comes from the sandbox's channel.

Bad input (a key that is not a short string, a value that is not plain data or is too large)
raises `ValueError` with the limit; the database is untouched. A backend that fails (the
PostgreSQL server unreachable) raises `KVUnavailable`; both reach the tenant as a BindingError
with the message, and the sandbox keeps serving.
"""

from __future__ import annotations

import builtins
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from dynworkers.runtime.errors import DynworkersError

if TYPE_CHECKING:
    from dynworkers.runtime.kv_postgres import PostgresKV

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 1 << 20
MAX_LIST = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    tenant TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tenant, namespace, key)
) WITHOUT ROWID
"""


class KVUnavailable(DynworkersError):
    """The KV's database failed; the message says what happened. Retry later."""


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"a KV key must be a non-empty str of <= {MAX_KEY_BYTES} bytes")
    return key


def encode_value(value: object) -> bytes:
    try:
        blob = msgspec.msgpack.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"a KV value must be plain data: {exc}") from None
    if len(blob) > MAX_VALUE_BYTES:
        raise ValueError(f"a KV value is at most {MAX_VALUE_BYTES} bytes encoded, got {len(blob)}")
    return blob


def check_listing(prefix: object, limit: object) -> tuple[str, int]:
    if not isinstance(prefix, str):
        raise ValueError("a KV list prefix must be a str")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_LIST:
        raise ValueError(f"a KV list limit must be an int in 1..{MAX_LIST}")
    return prefix, limit


async def open_kv(store_url: str, state_dir: Path) -> KVStore | PostgresKV:
    """The KV for this store URL, open: PostgreSQL for `postgresql://`, else SQLite in
    `state_dir`. `StoreError` (engine.store) when the database cannot be reached."""
    if store_url.startswith(("postgresql://", "postgres://")):
        from dynworkers.runtime.kv_postgres import PostgresKV

        kv = PostgresKV(store_url)
        await kv.open()
        return kv
    return KVStore(state_dir / "kv.db")


class KVStore:
    def __init__(self, path: str | Path) -> None:
        # Private, and so are the -wal and -shm files, which SQLite creates with the database's
        # mode: a tenant's values must not be readable by any other user (a sandbox's uid).
        path = Path(path)
        path.touch(mode=0o600)
        path.chmod(0o600)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        # WAL: readers never block the writer, and a crash loses at most uncommitted work.
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL is durable against process crashes; only a power loss can drop the
        # last commits, which is the usual trade for a cache-like KV.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, tenant: str, namespace: str, key: object) -> Any:
        row = self.db.execute(
            "SELECT value FROM kv WHERE tenant=? AND namespace=? AND key=?",
            (tenant, namespace, check_key(key)),
        ).fetchone()
        return None if row is None else msgspec.msgpack.decode(row[0])

    def put(self, tenant: str, namespace: str, key: object, value: object) -> None:
        blob = encode_value(value)
        self.db.execute(
            "INSERT OR REPLACE INTO kv (tenant, namespace, key, value) VALUES (?, ?, ?, ?)",
            (tenant, namespace, check_key(key), blob),
        )

    def delete(self, tenant: str, namespace: str, key: object) -> bool:
        cursor = self.db.execute(
            "DELETE FROM kv WHERE tenant=? AND namespace=? AND key=?",
            (tenant, namespace, check_key(key)),
        )
        return cursor.rowcount > 0

    def list(
        self, tenant: str, namespace: str, prefix: object = "", limit: object = MAX_LIST
    ) -> list[str]:
        prefix, limit = check_listing(prefix, limit)
        # Range scan on the primary key instead of LIKE, which would treat % and _ as wildcards.
        upper = prefix + "\U0010ffff"
        rows = self.db.execute(
            "SELECT key FROM kv WHERE tenant=? AND namespace=? AND key>=? AND key<? "
            "ORDER BY key LIMIT ?",
            (tenant, namespace, prefix, upper, limit),
        ).fetchall()
        return [row[0] for row in rows]

    def entries(
        self, after: tuple[str, str, str] = ("", "", ""), limit: int = 500
    ) -> builtins.list[tuple[str, str, str, bytes]]:
        """Up to `limit` rows (tenant, namespace, key, msgpack value) after `after`, in key
        order: page through every tenant's KV (`dynworkers export`)."""
        rows = self.db.execute(
            "SELECT tenant, namespace, key, value FROM kv WHERE (tenant, namespace, key) > "
            "(?, ?, ?) ORDER BY tenant, namespace, key LIMIT ?",
            (*after, limit),
        ).fetchall()
        return [(row[0], row[1], row[2], bytes(row[3])) for row in rows]
