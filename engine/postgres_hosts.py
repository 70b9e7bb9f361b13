"""Several hosts on one PostgreSQL: leases, claims, pauses, and LISTEN/NOTIFY between hosts.

Host side, on the event loop; imported by engine.postgres_store only. The operations here run in
the store's group-commit writer (`Database.write`) like every other write; each SQL statement
that decides who runs an instance says why it is safe when several hosts run it at once.

`Listener` holds one connection of its own in autocommit mode, `LISTEN`s on the `dynworkers`
channel and hands every payload to the engine's callbacks, on the loop. When the connection is
lost it reconnects with a backoff; notifications sent meanwhile are lost, which is why the
engine's poll stays as a safety net (a lost "wake" is found by the next poll, a lost "fence" by
the generation check of the next write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from dynworkers.engine.errors import InvalidTransition
from dynworkers.engine.postgres_rows import INSTANCE_FIELDS, STEP_FIELDS, Connection
from dynworkers.engine.postgres_schema import connect
from dynworkers.engine.store import HostRecord, InstanceNotFound, InstanceRecord, StepRecord

log = logging.getLogger("dynworkers.postgres")

#: the LISTEN/NOTIFY channel every host of one database shares
CHANNEL = "dynworkers"
#: seconds between two attempts to get the listening connection back
RELISTEN_S = 0.5

#: a claim holds while its owner's lease is ahead of now (no owner: nobody runs it)
_UNOWNED = (
    "(owner IS NULL OR owner = %(host)s OR NOT EXISTS "
    "(SELECT 1 FROM hosts WHERE hosts.id = instances.owner AND hosts.lease_until >= %(now)s))"
)
#: runnable now: queued, or waiting with no wake time or one that has passed
_RUNNABLE = (
    "(status = 'queued' OR (status = 'waiting' AND (wake_at IS NULL OR wake_at <= %(now)s)))"
)
#: owned by nobody live, not even this host (whose own running wake-ups must not be fenced out)
_ORPHANED = (
    "(owner IS NULL OR NOT EXISTS "
    "(SELECT 1 FROM hosts WHERE hosts.id = instances.owner AND hosts.lease_until >= %(now)s))"
)
_FINISHED = ("complete", "errored", "terminated")


async def register_host(
    db: Connection, host: str, address: str, now: float, lease_until: float
) -> None:
    await db.execute(
        "INSERT INTO hosts (id, address, started, lease_until) VALUES (%s,%s,%s,%s) "
        "ON CONFLICT (id) DO UPDATE SET address = excluded.address, "
        "started = excluded.started, lease_until = excluded.lease_until",
        (host, address, now, lease_until),
    )


async def renew_host(db: Connection, host: str, lease_until: float) -> None:
    await db.execute("UPDATE hosts SET lease_until=%s WHERE id=%s", (lease_until, host))


async def hosts(db: Connection) -> list[HostRecord]:
    cursor = await db.execute(
        "SELECT id, address, started, lease_until FROM hosts ORDER BY started"
    )
    return [HostRecord(*row) for row in await cursor.fetchall()]


async def claim(
    db: Connection, instance_id: str, host: str, now: float
) -> tuple[InstanceRecord, bool]:
    # One UPDATE: a second host's claim of the same row waits for the first one's commit and
    # then re-checks the WHERE clause against the committed row (READ COMMITTED), so it finds
    # the owner live and claims nothing.
    cursor = await db.execute(
        f"UPDATE instances SET owner = %(host)s, generation = generation + 1 "
        f"WHERE id = %(id)s AND {_RUNNABLE} AND {_UNOWNED} RETURNING {INSTANCE_FIELDS}",
        {"host": host, "now": now, "id": instance_id},
    )
    row = await cursor.fetchone()
    if row is not None:
        return InstanceRecord(*row), True
    cursor = await db.execute(
        f"SELECT {INSTANCE_FIELDS} FROM instances WHERE id=%s", (instance_id,)
    )
    row = await cursor.fetchone()
    if row is None:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")
    return InstanceRecord(*row), False


async def claim_batch(
    db: Connection, instance_ids: list[str], host: str, now: float
) -> list[tuple[InstanceRecord | None, bool, list[StepRecord]]]:
    """`claim` for each, with the steps of those claimed, in one transaction. The rows are
    locked in id order, so two hosts claiming overlapping batches never wait on each other in
    a cycle."""
    found: list[tuple[InstanceRecord | None, bool, list[StepRecord]]] = [(None, False, [])] * len(
        instance_ids
    )
    for index in sorted(range(len(instance_ids)), key=instance_ids.__getitem__):
        instance_id = instance_ids[index]
        try:
            record, claimed = await claim(db, instance_id, host, now)
        except InstanceNotFound:
            continue
        steps: list[StepRecord] = []
        if claimed:
            cursor = await db.execute(
                f"SELECT {STEP_FIELDS} FROM steps WHERE instance_id=%s ORDER BY position",
                (instance_id,),
            )
            steps = [StepRecord(*row) for row in await cursor.fetchall()]
        found[index] = (record, claimed, steps)
    return found


async def claimable(
    db: Connection, host: str, now: float, limit: int
) -> list[tuple[str, str | None]]:
    # FOR UPDATE SKIP LOCKED: hosts polling at once each take different rows, never wait on
    # each other, and claim what they take in the same statement (so two polls never both
    # queue one instance). The engine's wake-up claims it again as this host: a no-op owner.
    cursor = await db.execute(
        "UPDATE instances SET owner = %(host)s, generation = generation + 1 WHERE id IN ("
        f"SELECT id FROM instances WHERE {_RUNNABLE} AND {_ORPHANED} "
        "ORDER BY COALESCE(wake_at, created) LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
        ") RETURNING id, tenant, COALESCE(wake_at, created)",
        {"host": host, "now": now, "limit": limit},
    )
    found = sorted(await cursor.fetchall(), key=lambda row: row[2])
    return [(row[0], row[1]) for row in found]


async def request_pause(db: Connection, instance_id: str, now: float) -> str:
    # FOR UPDATE: the owner's last write (which turns waitingForPause into paused) and this
    # decision are ordered by the row lock
    cursor = await db.execute(
        "SELECT status, owner IS NOT NULL AND EXISTS (SELECT 1 FROM hosts WHERE "
        "hosts.id = instances.owner AND hosts.lease_until >= %s) FROM instances "
        "WHERE id=%s FOR UPDATE",
        (now, instance_id),
    )
    row = await cursor.fetchone()
    if row is None:
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")
    status, running = row
    if status in _FINISHED:
        raise InvalidTransition(
            f"instance {instance_id!r} is {status}: it cannot be paused (restart it to run it "
            "again)"
        )
    if status in ("paused", "waitingForPause"):
        return str(status)
    wanted = "waitingForPause" if running else "paused"
    await db.execute(
        "UPDATE instances SET status=%s, updated=%s WHERE id=%s", (wanted, now, instance_id)
    )
    return wanted


async def notify(db: Connection, message: str) -> None:
    # inside the writer's transaction: sent when that commit is done, never before the change
    await db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, message))


class Listener:
    """One LISTEN connection; `callbacks` hear every payload on the loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.callbacks: list[Callable[[str], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            try:
                conn = await connect(self.url)
            except Exception as exc:
                log.warning("cannot LISTEN for other hosts (%s); trying again", exc)
                await asyncio.sleep(RELISTEN_S)
                continue
            try:
                await conn.set_autocommit(True)
                await conn.execute(f"LISTEN {CHANNEL}")
                self.ready.set()
                async for notice in conn.notifies():
                    for callback in list(self.callbacks):
                        try:
                            callback(notice.payload)
                        except Exception:
                            log.exception("a notification handler failed on %r", notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lost the LISTEN connection (%s); listening again", exc)
            finally:
                self.ready.clear()
                with contextlib.suppress(Exception):
                    await conn.close()
            await asyncio.sleep(RELISTEN_S)
