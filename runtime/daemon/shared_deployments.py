"""Deployments shared by every host of one PostgreSQL store: the store is the truth, each host
compiles and caches locally.

Host side, on the daemon's event loop; used by runtime.daemon.tenants only when the store URL is
`postgresql://` (it imports psycopg through engine.postgres_db). The "deployments" component has
tables of its own (`DEPLOYMENT_MIGRATIONS`, versioned apart from the engine's and the KV's):
`deploy_versions` holds each version's modules once (by tenant and content hash) and
`deploy_history` each tenant's deploys and removals in order; a tenant's last history row is what
every host serves (no row, or a removal: not served).

How a deploy reaches every host:
- The deploying host (control API or its code directory) has compiled the version already; one
  transaction, under a per-tenant advisory lock, stores it, appends the history row when it is not
  already current, and sends `deploy <tenant> <version>` (or `undeploy <tenant>`) on the
  store's LISTEN/NOTIFY channel, delivered once that transaction commits. The host then serves it.
- Every host, on such a notice, at start, and every `SYNC_INTERVAL_S` (the safety net for a
  notice lost while a LISTEN connection was down), reads the current versions, fetches and
  compiles the ones it does not serve, and serves them. A version that does not compile on a host
  is logged there, that host keeps serving what it served (or, for a tenant it never served,
  answers with the compile errors), and it is not tried again until a newer version is current.
- The on-disk copy under `<state_dir>/code/` (runtime.daemon.deployments) stays as the host's
  local cache and keeps its history file; the history the control API shows is the store's.

The code directory on several hosts (the rule): each host remembers, in its own state directory,
the version it last read from its own code directory for each tenant. A change a host reads there
(at start or on SIGHUP: a tenant added, edited, or removed) deploys for every host, exactly as a
`PUT /_/tenants/<id>` through that host would; an unchanged directory changes nothing, so a host
restarted with an older copy of the directory does not roll back what another host deployed
since. A host whose state directory is new (a host added to the cluster) only adds, from its
directory, the tenants the store does not serve yet. Keep the code directory the same on every
host (or use it on one host, or only the control API) and the rule never surprises anyone.

Failures: `StoreError` (engine.store) when the database is unreachable; a deploy then changes
nothing, anywhere. A sync that fails is logged and retried at the next notice or check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from dynworkers.engine.postgres_db import Connection, Database
from dynworkers.engine.store import Store, StoreError
from dynworkers.loader import CompileError
from dynworkers.runtime.daemon.deployments import Deployments, Version

log = logging.getLogger("dynworkers.deployments")

#: seconds between two checks of the store without a notice (the safety net)
SYNC_INTERVAL_S = 10.0
#: the advisory lock class a deploy holds per tenant ("dpl" in ASCII); the tenant is the key
DEPLOY_LOCK = 0x64706C
#: the engine's LISTEN/NOTIFY channel (engine.postgres_hosts.CHANNEL): one listener per host
CHANNEL = "dynworkers"

#: the deployments' schema ("deployments" in schema_version): append only, never edit
DEPLOYMENT_MIGRATIONS: list[str] = [
    """
    CREATE TABLE deploy_versions (
        tenant text NOT NULL,
        version text NOT NULL,
        main_module text NOT NULL,
        -- msgpack of {module name: source}
        modules bytea NOT NULL,
        PRIMARY KEY (tenant, version)
    );
    CREATE TABLE deploy_history (
        seq bigserial PRIMARY KEY,
        tenant text NOT NULL,
        -- NULL: the tenant was removed
        version text,
        source text NOT NULL,
        deployed_at double precision NOT NULL,
        host text NOT NULL
    );
    CREATE INDEX deploy_history_tenant ON deploy_history (tenant, seq);
    """,
]

#: (version or None, source, deployed_at) of each tenant's last history row
Current = dict[str, tuple[str | None, str, float]]
Compile = Callable[[Version], Awaitable[None]]


async def _current(db: Connection) -> Current:
    cursor = await db.execute(
        "SELECT DISTINCT ON (tenant) tenant, version, source, deployed_at FROM deploy_history "
        "ORDER BY tenant, seq DESC"
    )
    return {row[0]: (row[1], row[2], row[3]) for row in await cursor.fetchall()}


def database(url: str) -> Database:
    """The deployments' tables in the database at `url` (open it before use)."""
    return Database(url, "deployments", DEPLOYMENT_MIGRATIONS, pool_size=2)


async def deployed_tenants(db: Database) -> set[str]:
    """Tenants with any history in the store (served or removed)."""
    return set(await db.read("read deployments", _current))


async def import_tenant(
    db: Database,
    tenant: str,
    versions: list[tuple[str, str, dict[str, str]]],
    history: list[tuple[str | None, str, float]],
    host: str,
) -> None:
    """`dynworkers import`: replace one tenant's versions (version, main module, modules) and
    history (version or None, source, deployed_at), in one transaction; hosts running on the
    store hear `deploy` (or `undeploy`) for its last entry."""

    async def operation(conn: Connection) -> None:
        await SharedDeployments._lock_tenant(conn, tenant)
        await conn.execute("DELETE FROM deploy_history WHERE tenant=%s", (tenant,))
        for version, main, modules in versions:
            await conn.execute(
                "INSERT INTO deploy_versions (tenant, version, main_module, modules) "
                "VALUES (%s,%s,%s,%s) ON CONFLICT (tenant, version) DO NOTHING",
                (tenant, version, main, msgspec.msgpack.encode(modules)),
            )
        for entry, source, deployed_at in history:
            await conn.execute(
                "INSERT INTO deploy_history (tenant, version, source, deployed_at, host) "
                "VALUES (%s, %s, %s, %s, %s)",
                (tenant, entry, source, deployed_at, host),
            )
        if history:
            last = history[-1][0]
            notice = f"deploy {tenant} {last}" if last is not None else f"undeploy {tenant}"
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, notice))

    await db.write("import deployments", operation)


class SharedDeployments:
    """The store's deployments, mirrored into one host's `Deployments`."""

    def __init__(
        self,
        url: str,
        deployments: Deployments,
        compile: Compile,
        broken: dict[str, tuple[str, CompileError]],
    ) -> None:
        self.db = database(url)
        self.deployments = deployments
        self.compile = compile
        self.host = f"{socket.gethostname()}:{os.getpid()}"
        #: called with a tenant whose served code changed (to drop its sandbox and loader entry)
        self.changed: Callable[[str], None] = lambda tenant: None
        #: per tenant, the current version that did not compile here: not tried again
        self.failed: dict[str, str] = {}
        #: the tenants' (version, error) whose served code does not compile (runtime.daemon.tenants)
        self.broken = broken
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.db.open()

    def listen(self, store: Store) -> None:
        """Sync on every deploy notice, and every SYNC_INTERVAL_S."""
        store.subscribe(self._on_notice)
        self._wanted.set()  # once more: a deploy may have landed before the listener was up
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.db.close()

    # --- deploying from this host ----------------------------------------------------------------

    async def publish(self, version: Version) -> bool:
        """Make a compiled version current for every host and serve it here; False if it was
        already current."""
        blob = msgspec.msgpack.encode(version.modules)

        async def operation(db: Connection) -> bool:
            await self._lock_tenant(db, version.tenant)
            await db.execute(
                "INSERT INTO deploy_versions (tenant, version, main_module, modules) "
                "VALUES (%s,%s,%s,%s) ON CONFLICT (tenant, version) DO NOTHING",
                (version.tenant, version.version, version.main_module, blob),
            )
            if await self._latest(db, version.tenant) == version.version:
                return False
            await self._append(db, version.tenant, version.version, version.source)
            return True

        async with self._lock:
            changed = await self.db.write("deploy", operation)
            self.failed.pop(version.tenant, None)
            self.broken.pop(version.tenant, None)
            if self.deployments.activate(version):
                self.changed(version.tenant)
        return changed

    async def unpublish(self, tenant: str, keep_directory_mark: bool = False) -> None:
        """Stop serving a tenant on every host: its directory is gone on this one, or it was
        deleted through the API (`keep_directory_mark`: an unchanged directory does not deploy
        it again at the next reload, a changed one does; see Deployments.remove)."""

        async def operation(db: Connection) -> None:
            await self._lock_tenant(db, tenant)
            if await self._latest(db, tenant) is not None:
                await self._append(db, tenant, None, "directory")

        async with self._lock:
            await self.db.write("remove tenant", operation)
            self.deployments.remove(tenant, replicated=keep_directory_mark)
            self.changed(tenant)

    @staticmethod
    async def _lock_tenant(db: Connection, tenant: str) -> None:
        # held to the commit: two hosts deploying one tenant append one after the other, so
        # "already current" is decided on the committed history
        await db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (DEPLOY_LOCK, tenant))

    @staticmethod
    async def _latest(db: Connection, tenant: str) -> str | None:
        cursor = await db.execute(
            "SELECT version FROM deploy_history WHERE tenant=%s ORDER BY seq DESC LIMIT 1",
            (tenant,),
        )
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _append(self, db: Connection, tenant: str, version: str | None, source: str) -> None:
        await db.execute(
            "INSERT INTO deploy_history (tenant, version, source, deployed_at, host) "
            "VALUES (%s, %s, %s, extract(epoch from clock_timestamp()), %s)",
            (tenant, version, source, self.host),
        )
        notice = f"deploy {tenant} {version}" if version is not None else f"undeploy {tenant}"
        # inside the transaction: delivered when it commits, never before the rows are visible
        await db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, notice))

    # --- serving what the store says -------------------------------------------------------------

    def _on_notice(self, message: str) -> None:
        if message.startswith(("deploy ", "undeploy ")):
            self._wanted.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), SYNC_INTERVAL_S)
            self._wanted.clear()
            try:
                await self.sync()
            except StoreError as exc:
                log.warning("deployments: cannot read the store (%s); trying again later", exc)
            except Exception:
                log.exception("deployments: the sync failed; trying again later")

    async def sync(self) -> list[str]:
        """Serve the store's current versions here; the tenants whose served code changed."""
        async with self._lock:
            current = await self.db.read("read deployments", _current)
            changed = []
            for tenant, (version, source, deployed_at) in sorted(current.items()):
                if await self._sync_one(tenant, version, source, deployed_at):
                    changed.append(tenant)
            return changed

    async def _sync_one(
        self, tenant: str, version: str | None, source: str, deployed_at: float
    ) -> bool:
        served = self.deployments.current.get(tenant)
        if version is None:
            if served is None:
                return False
            self.deployments.remove(tenant, replicated=True)
            self.broken.pop(tenant, None)
            self.changed(tenant)
            log.info("tenant %r removed by another host", tenant)
            return True
        if served is not None and served.version == version and tenant not in self.broken:
            return False
        if self.failed.get(tenant) == version:
            return False
        wanted = await self._fetch(tenant, version, source, deployed_at)
        try:
            await self.compile(wanted)
        except CompileError as exc:
            log.error(
                "tenant %r: version %s, deployed by another host, does not compile here; %s:\n%s",
                tenant,
                version,
                "the version served before keeps serving" if served else "not served",
                exc,
            )
            self.failed[tenant] = version
            if served is None:
                self.broken[tenant] = (version, exc)
                self.deployments.current[tenant] = wanted  # answered with its errors
            return False
        self.failed.pop(tenant, None)
        self.broken.pop(tenant, None)
        self.deployments.activate(wanted, replicated=True)
        self.changed(tenant)
        log.info("tenant %r: serving version %s (deployed through another host)", tenant, version)
        return True

    async def _fetch(self, tenant: str, version: str, source: str, deployed_at: float) -> Version:
        async def operation(db: Connection) -> tuple[str, bytes]:
            cursor = await db.execute(
                "SELECT main_module, modules FROM deploy_versions WHERE tenant=%s AND version=%s",
                (tenant, version),
            )
            row = await cursor.fetchone()
            if row is None:
                raise StoreError(f"version {version} of tenant {tenant!r} is missing")
            return row[0], row[1]

        main, blob = await self.db.read("read a version", operation)
        modules = msgspec.msgpack.decode(blob, type=dict[str, str])
        return Version(tenant, version, main, modules, source, deployed_at)

    async def history(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's deploys and removals, oldest first, as every host sees them."""

        async def operation(db: Connection) -> list[tuple[Any, ...]]:
            cursor = await db.execute(
                "SELECT h.version, h.source, h.deployed_at, h.host, v.main_module, v.modules "
                "FROM deploy_history h LEFT JOIN deploy_versions v "
                "ON v.tenant = h.tenant AND v.version = h.version "
                "WHERE h.tenant=%s ORDER BY h.seq",
                (tenant,),
            )
            return list(await cursor.fetchall())

        entries: list[dict[str, Any]] = []
        for version, source, deployed_at, host, main, blob in await self.db.read(
            "read a history", operation
        ):
            if version is None:
                entries.append({"removed": True, "deployed_at": deployed_at, "host": host})
                continue
            modules = msgspec.msgpack.decode(blob, type=dict[str, str])
            entries.append(
                {
                    "version": version,
                    "main_module": main,
                    "modules": sorted(modules),
                    "source": source,
                    "deployed_at": deployed_at,
                    "host": host,
                }
            )
        return entries
