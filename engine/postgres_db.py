"""One PostgreSQL database in use: a connection pool, a group-commit writer, and recovery.

Host side, on the event loop that called `open()`; used by engine.postgres_store and
runtime.kv_postgres, imported only for a `postgresql://` URL. `open()` connects once (a wrong URL
or a server that is not there is a `StoreError` with one line saying what to check), applies the
component's migrations (engine.postgres_schema), and opens the pool.

Writes (`write(name, operation)`) go through one writer task: it takes every operation queued,
runs each inside its own savepoint in one transaction on one pooled connection, and commits them
together, so a hundred concurrent callers share one commit (one WAL flush). A caller is answered
after the commit that holds its record; an operation that raises is rolled back to its savepoint
alone and only its caller gets the error. Operations commit in the order they were submitted.
Reads (`read(name, operation)`) run at once on their own pooled connections (autocommit: one
round trip each) and see every write an awaited call made.

Failures: every driver error becomes `StoreError` naming the operation. When the server is lost,
the database is marked down: calls fail at once ("unreachable") instead of each waiting for a
connection, and a healer task probes the server every `HEAL_INTERVAL_S`; when it answers, a new
pool replaces the old one and calls go through again, without a reopen. A connection lost during
COMMIT leaves that batch's outcome unknown, and its callers are told so. A deadlock or a
serialization failure (possible when several hosts share the database) reruns the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from dynworkers.engine.postgres_schema import CONNECT_TIMEOUT_S, connect, migrate, reason, redact
from dynworkers.engine.store import StoreError

log = logging.getLogger("dynworkers.postgres")

T = TypeVar("T")
Connection = psycopg.AsyncConnection[tuple[Any, ...]]
Operation = Callable[[Connection], Awaitable[Any]]
Queued = tuple[str, Operation, "asyncio.Future[Any]"]

#: operations one transaction takes at most
MAX_BATCH = 256
#: times a batch is rerun after a deadlock or serialization failure
RETRIES = 3
#: seconds between two probes of a lost server
HEAL_INTERVAL_S = 0.5


class _Rollback(Exception):
    """Carries a lone operation's error out of its transaction, which rolls it back."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Database:
    def __init__(self, url: str, component: str, migrations: list[str], pool_size: int = 8) -> None:
        self.url = url
        self.component = component
        self.migrations = migrations
        self.pool_size = pool_size
        self.pool: psycopg_pool.AsyncConnectionPool[Connection] | None = None
        self._queue: asyncio.Queue[Queued | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._healer: asyncio.Task[None] | None = None
        #: why the server is unreachable, and since when (monotonic); None while it answers
        self.down: tuple[str, float] | None = None
        self.commits = 0  # transactions committed: the group-commit figure

    # --- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        conn = await connect(self.url)
        try:
            await migrate(conn, self.component, self.migrations)
        except psycopg.Error as exc:
            raise StoreError(f"open: migrating {redact(self.url)} failed: {reason(exc)}") from None
        finally:
            await conn.close()
        self.pool = await self._new_pool()
        self._queue = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _new_pool(self) -> psycopg_pool.AsyncConnectionPool[Connection]:
        pool = psycopg_pool.AsyncConnectionPool(
            self.url,
            min_size=min(2, self.pool_size),
            max_size=self.pool_size,
            open=False,
            kwargs={"autocommit": True},  # transactions are explicit (the writer's)
            timeout=CONNECT_TIMEOUT_S,
            name=f"dynworkers-{self.component}",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except psycopg_pool.PoolTimeout:
            await pool.close()
            raise StoreError(f"open: no connection to {redact(self.url)} in time") from None
        return pool

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
            self._writer = None
        if self._healer is not None:
            self._healer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._healer
            self._healer = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    # --- calls -----------------------------------------------------------------------------------

    async def write(self, name: str, operation: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `operation` in the next group commit; its value once committed."""
        if self._writer is None or self._writer.done():
            raise StoreError(f"{name}: the store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((name, operation, future))
        return await future

    async def read(self, name: str, operation: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `operation` on a pooled connection of its own, outside any transaction."""
        if self.pool is None:
            raise StoreError(f"{name}: the store is not open")
        if self.down is not None:
            raise self._unreachable(name)
        try:
            async with self.pool.connection() as conn:
                return await operation(conn)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise self._lost(name, exc) from None
        except psycopg.Error as exc:
            raise StoreError(f"{name}: {reason(exc)}") from None

    # --- loss and recovery -----------------------------------------------------------------------

    def _lost(self, name: str, exc: BaseException) -> StoreError:
        if self.down is None:
            self.down = (reason(exc), time.monotonic())
            log.error(
                "the PostgreSQL store at %s is unreachable: %s", redact(self.url), reason(exc)
            )
            if self._healer is None or self._healer.done():
                self._healer = asyncio.get_running_loop().create_task(self._heal())
        return self._unreachable(name)

    def _unreachable(self, name: str) -> StoreError:
        why, since = self.down or ("unknown", time.monotonic())
        return StoreError(
            f"{name}: the PostgreSQL store at {redact(self.url)} is unreachable ({why}, "
            f"for {time.monotonic() - since:.0f} s); it reconnects by itself when the server is "
            "back: retry later"
        )

    async def _heal(self) -> None:
        """Probe the lost server; when it answers, swap in a fresh pool."""
        while True:
            await asyncio.sleep(HEAL_INTERVAL_S)
            try:
                probe = await connect(self.url)
                await probe.close()
                pool = await self._new_pool()
            except StoreError:
                continue
            old, self.pool = self.pool, pool
            self.down = None
            log.warning("the PostgreSQL store at %s is reachable again", redact(self.url))
            if old is not None:
                await old.close()
            return

    # --- the writer ------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            if self.down is not None:
                outcomes = [(False, self._unreachable(name)) for name, _, _ in batch]
            else:
                try:
                    outcomes = await self._commit(batch)
                except Exception as exc:  # a bug, not the database: tell the callers, go on
                    log.exception("the PostgreSQL writer failed")
                    error = f"{type(exc).__name__}: {exc}"
                    outcomes = [(False, StoreError(f"{n}: {error}")) for n, _, _ in batch]
            for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # the caller was cancelled; its write stands
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def _commit(self, batch: list[Queued]) -> list[tuple[bool, Any]]:
        assert self.pool is not None
        for attempt in range(RETRIES + 1):
            committing = False
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    outcomes = await _run(conn, batch)
                    committing = True  # COMMIT is sent when the block ends
                self.commits += 1
                return outcomes
            except _Rollback as rollback:
                return [(False, rollback.error)]
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt == RETRIES:
                    return [(False, StoreError(f"{name}: {reason(exc)}")) for name, _, _ in batch]
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                if committing:
                    lost = self._lost("commit", exc)
                    return [(False, _unknown_outcome(name, lost)) for name, _, _ in batch]
                return [(False, self._lost(name, exc)) for name, _, _ in batch]
            except psycopg.Error as exc:
                return [(False, StoreError(f"{name}: {reason(exc)}")) for name, _, _ in batch]
        raise AssertionError("unreachable")


async def _run(conn: Connection, batch: list[Queued]) -> list[tuple[bool, Any]]:
    if len(batch) == 1:  # no savepoint: the whole transaction is this operation's
        name, operation, _ = batch[0]
        try:
            return [(True, await operation(conn))]
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            raise _Rollback(StoreError(f"{name}: {reason(exc)}")) from None
        except Exception as exc:
            raise _Rollback(exc) from None
    outcomes: list[tuple[bool, Any]] = []
    for name, operation, _ in batch:
        try:
            # a nested transaction is a SAVEPOINT: an error undoes this operation alone
            async with conn.transaction():
                outcomes.append((True, await operation(conn)))
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            outcomes.append((False, StoreError(f"{name}: {reason(exc)}")))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


def _unknown_outcome(name: str, lost: StoreError) -> StoreError:
    return StoreError(
        f"{name}: the connection was lost during COMMIT: the write may or may not have been "
        f"applied; read it back before retrying ({lost})"
    )
