"""Tenant-scoped key-value storage in PostgreSQL: one KV for every host on the database.

Host side, on the supervisor's event loop; imported only when the store URL is `postgresql://`
(runtime.kv.open_kv). The same rows, keys, limits and errors as the SQLite KV (runtime.kv), on
engine.postgres_db's pool: a put or delete is one operation in the next group commit and returns
once committed; a get or list reads on a pooled connection.

What a tenant can rely on: a write that returned is durable and visible to every later read on
any host (read your writes, everywhere); concurrent writes to one key end with the last one
committed; there are no multi-key transactions. When the database is unreachable every call
raises `KVUnavailable` at once (the tenant sees a BindingError saying so), and calls succeed
again, without a restart, once the server is back.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec

from dynworkers.engine.postgres_db import Connection, Database
from dynworkers.engine.store import StoreError
from dynworkers.runtime.kv import (
    MAX_LIST,
    KVUnavailable,
    check_key,
    check_listing,
    encode_value,
)

T = TypeVar("T")

#: the KV's schema, versioned apart from the engine's ("kv" in schema_version): append only
KV_MIGRATIONS: list[str] = [
    """
    CREATE TABLE kv (
        tenant text NOT NULL,
        namespace text NOT NULL,
        -- C collation: keys order by code point, as in SQLite, so prefix ranges are exact
        key text COLLATE "C" NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (tenant, namespace, key)
    );
    """,
]


class PostgresKV:
    def __init__(self, url: str) -> None:
        self.db = Database(url, "kv", KV_MIGRATIONS, pool_size=4)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def get(self, tenant: str, namespace: str, key: object) -> Any:
        key = _key(key)

        async def operation(db: Connection) -> Any:
            cursor = await db.execute(
                "SELECT value FROM kv WHERE tenant=%s AND namespace=%s AND key=%s",
                (tenant, namespace, key),
            )
            row = await cursor.fetchone()
            return None if row is None else msgspec.msgpack.decode(row[0])

        return await self._call(self.db.read("KV get", operation))

    async def put(self, tenant: str, namespace: str, key: object, value: object) -> None:
        key, blob = _key(key), encode_value(value)

        async def operation(db: Connection) -> None:
            # upsert: the last committed put of a key wins, on every host
            await db.execute(
                "INSERT INTO kv (tenant, namespace, key, value) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (tenant, namespace, key) DO UPDATE SET value = excluded.value",
                (tenant, namespace, key, blob),
            )

        await self._call(self.db.write("KV put", operation))

    async def delete(self, tenant: str, namespace: str, key: object) -> bool:
        key = _key(key)

        async def operation(db: Connection) -> bool:
            cursor = await db.execute(
                "DELETE FROM kv WHERE tenant=%s AND namespace=%s AND key=%s",
                (tenant, namespace, key),
            )
            return cursor.rowcount > 0

        return await self._call(self.db.write("KV delete", operation))

    async def list(
        self, tenant: str, namespace: str, prefix: object = "", limit: object = MAX_LIST
    ) -> list[str]:
        prefix, limit = check_listing(prefix, limit)
        if "\x00" in prefix:
            return []  # no key holds a NUL (PostgreSQL text cannot)
        # a range on the primary key, not LIKE, which would treat % and _ as wildcards
        upper = prefix + "\U0010ffff"

        async def operation(db: Connection) -> list[str]:
            cursor = await db.execute(
                "SELECT key FROM kv WHERE tenant=%s AND namespace=%s AND key>=%s AND key<%s "
                "ORDER BY key LIMIT %s",
                (tenant, namespace, prefix, upper, limit),
            )
            return [row[0] for row in await cursor.fetchall()]

        return await self._call(self.db.read("KV list", operation))

    async def entries(
        self, after: tuple[str, str, str] = ("", "", ""), limit: int = 500
    ) -> builtins.list[tuple[str, str, str, bytes]]:
        """Up to `limit` rows (tenant, namespace, key, msgpack value) after `after`, in key
        order: page through every tenant's KV (`dynworkers import` checks what exists)."""

        async def operation(db: Connection) -> list[tuple[str, str, str, bytes]]:
            # a row comparison on the primary key: each page is an index range
            cursor = await db.execute(
                "SELECT tenant, namespace, key, value FROM kv WHERE (tenant, namespace, key) > "
                "(%s, %s, %s) ORDER BY tenant, namespace, key LIMIT %s",
                (*after, limit),
            )
            return [(r[0], r[1], r[2], bytes(r[3])) for r in await cursor.fetchall()]

        return await self._call(self.db.read("KV entries", operation))

    @staticmethod
    async def _call(call: Awaitable[T]) -> T:
        try:
            return await call
        except StoreError as exc:
            raise KVUnavailable(f"the KV is unavailable: {exc}") from None


def _key(key: object) -> str:
    checked = check_key(key)
    if "\x00" in checked:
        raise ValueError("a KV key cannot contain NUL characters on the PostgreSQL KV")
    return checked
