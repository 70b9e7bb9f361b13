"""The store interface of the durable engine, and the records it keeps.

Host side. Plain data records and one abstract `Store`; backends (engine.sqlite_store,
engine.postgres_store) implement it behind a URL (`sqlite:///path/engine.db`,
`postgresql://user@host/database`), so the engine never names a backend. Every
write a caller awaits is durable when the await returns; backends are free to share one commit
among many callers (group commit).

Errors: `StoreError` for a backend failure, `InstanceNotFound(LookupError)` and
`InstanceExists(ValueError)` for the caller's mistakes; a failed write leaves nothing half done
(each call is one transaction). `StaleGeneration` is not a failure: a fenced write found that the
instance was terminated, restarted or deleted since its wake-up began, and wrote nothing.

    EngineError
    ├── StoreError            the backend failed (disk full, I/O error, server gone): retry later
    │   ├── InstanceNotFound  (LookupError)
    │   └── InstanceExists    (ValueError)
    └── StaleGeneration       a fenced write lost to terminate, restart or delete

The fence: every instance has a `generation`. `fence()` and `restart()` move it on in the same
transaction that changes the instance, and every write a wake-up makes carries the generation it
began with (`record(..., generation=g)`, `wait_for_event(..., generation=g)`), so a wake-up that
lost the race to a terminate, a restart or a delete writes nothing, on this host or any other.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from dynworkers.engine.errors import EngineError


class StoreError(EngineError):
    """The backend failed; the message names the operation."""


class InstanceNotFound(StoreError, LookupError):
    """No instance with that id."""


class InstanceExists(StoreError, ValueError):
    """An instance with that id already exists."""


class StaleGeneration(EngineError):
    """A fenced write found the instance terminated, restarted or deleted since its wake-up
    began (its generation moved on, or the instance is gone); nothing was written."""


@dataclass(frozen=True)
class InstanceRecord:
    id: str
    workflow: str
    status: str
    #: msgpack of the event payload (for dynamic dispatch: the envelope)
    params: bytes
    created: float
    updated: float
    #: the tenant whose binding created it, or None for host-created instances
    tenant: str | None = None
    #: code version the instance pinned at start, or None for "latest"
    version: str | None = None
    output: bytes | None = None
    error: bytes | None = None
    #: epoch seconds when a sleeping or waiting instance is due; None when not waiting on time
    wake_at: float | None = None
    #: the event type a waiting instance waits for; an event of that type wakes it at once
    waiting_for: str | None = None
    #: moves on at every claim, terminate, restart and delete: a wake-up's writes carry the
    #: one its claim gave it, and a write with an older one is refused (`StaleGeneration`)
    generation: int = 0
    #: the host whose wake-up runs the instance now (claimed), or None; a claim lapses with
    #: its host's lease
    owner: str | None = None
    #: the instance that started this one as a child (`step.start_child`), or None
    parent: str | None = None


@dataclass(frozen=True)
class StepRecord:
    instance_id: str
    position: int
    kind: str
    name: str
    occurrence: int
    #: "complete" (result holds msgpack), "failed" (error holds msgpack), "pending" (retrying)
    status: str
    result: bytes | None = None
    error: bytes | None = None
    attempts: int = 0
    #: msgpack of the step's config, frozen at the first attempt
    config: bytes | None = None
    #: epoch seconds: when a pending sleep ends, a wait times out, or a retry is due
    wake_at: float | None = None


@dataclass(frozen=True)
class HistoryRecord:
    """One entry of an instance's history: an attempt ended, a sleep or wait began, an event
    arrived, an operation (create, pause, resume, terminate, restart) was made."""

    instance_id: str
    seq: int
    at: float
    kind: str
    #: msgpack of a dict whose keys depend on `kind`
    detail: bytes


#: (at, kind, detail msgpack) of a history entry to append
HistoryRow = tuple[float, str, bytes]


@dataclass(frozen=True)
class HostRecord:
    """A host (an engine) sharing the store: its claims hold while `lease_until` is ahead."""

    id: str
    address: str
    started: float
    lease_until: float


@dataclass(frozen=True)
class EventRecord:
    instance_id: str
    seq: int
    type: str
    payload: bytes
    timestamp: float


#: what `Store.claim_batch` gives per instance: its record (None: no such instance), whether
#: this host claimed it, and its steps (only when claimed)
Claim = tuple[InstanceRecord | None, bool, list[StepRecord]]


class Store(abc.ABC):
    """What the engine needs from durable storage."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # instances
    @abc.abstractmethod
    async def create_instances(self, records: list[InstanceRecord]) -> list[str]:
        """Insert each record whose id is new; return the ids inserted, in order."""

    @abc.abstractmethod
    async def get_instance(self, instance_id: str) -> InstanceRecord: ...

    @abc.abstractmethod
    async def update_instance(self, instance_id: str, **fields: object) -> None: ...

    @abc.abstractmethod
    async def delete_instance(self, instance_id: str) -> None: ...

    @abc.abstractmethod
    async def list_instances(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InstanceRecord]: ...

    @abc.abstractmethod
    async def due_instances(self, now: float, limit: int) -> list[InstanceRecord]:
        """Queued instances, and waiting ones whose wake_at has passed, oldest first."""

    @abc.abstractmethod
    async def count_by_status(self) -> dict[str, int]:
        """How many instances hold each stored status; a status nobody holds is absent."""

    # steps
    @abc.abstractmethod
    async def steps(self, instance_id: str) -> list[StepRecord]: ...

    @abc.abstractmethod
    async def put_step(self, step: StepRecord) -> None:
        """Insert or replace the step at (instance_id, position)."""

    @abc.abstractmethod
    async def delete_steps_from(self, instance_id: str, position: int) -> None:
        """Forget steps at and after `position` (restart from a named step)."""

    # events
    @abc.abstractmethod
    async def add_event(self, instance_id: str, type: str, payload: bytes, timestamp: float) -> int:
        """Buffer an event; return its sequence number (increasing among the buffered events
        of the instance: events leave in the order they came)."""

    @abc.abstractmethod
    async def take_event(self, instance_id: str, type: str) -> EventRecord | None:
        """Remove and return the oldest buffered event of `type`, if any."""

    # composite operations: each is one transaction
    @abc.abstractmethod
    async def record(
        self,
        step: StepRecord | None,
        instance_id: str,
        *,
        generation: int | None = None,
        history: list[HistoryRow] | None = None,
        **fields: object,
    ) -> None:
        """Put `step` (if any), update the instance's `fields` (if any) and append `history`
        (if any), atomically.

        With `generation`, only while the instance still has that generation: else
        `StaleGeneration` and nothing written."""

    @abc.abstractmethod
    async def wait_for_event(
        self,
        pending: StepRecord,
        type: str,
        encode: Callable[[EventRecord], bytes],
        *,
        generation: int | None = None,
        **fields: object,
    ) -> EventRecord | None:
        """One atomic step for `step.wait_for_event`: take the oldest buffered event of `type`
        and record `pending` complete with `encode(event)` as its result (return the event);
        or, when none is buffered, record `pending` and update the instance's `fields` (return
        None). An event delivered a moment later then finds the instance waiting for it, so no
        event can land between "none buffered" and "waiting for one". Fenced by `generation`
        as `record` is."""

    @abc.abstractmethod
    async def fence(self, instance_id: str, **fields: object) -> int:
        """Move the instance's generation on and update its `fields`, atomically; return the
        new generation. Every wake-up that began before is fenced out."""

    @abc.abstractmethod
    async def deliver_event(
        self, instance_id: str, type: str, payload: bytes, timestamp: float, now: float
    ) -> bool:
        """Buffer an event; if the instance waits for that type, make it queued. True if it
        woke. `InstanceNotFound`, or `ValueError` for an instance that is finished."""

    @abc.abstractmethod
    async def restart(self, instance_id: str, position: int, now: float) -> int:
        """Forget steps from `position` on, move the generation on and make the instance
        queued again, atomically; return the new generation."""

    @abc.abstractmethod
    async def unfinished(self) -> list[tuple[str, str, str | None, float | None]]:
        """(id, status, tenant, wake_at) of every instance not complete, errored or
        terminated: what a restarted engine must resume."""

    # hosts and claims: several engines on one store
    @abc.abstractmethod
    async def register_host(self, host: str, address: str, now: float, lease_until: float) -> None:
        """Add or refresh a host with its lease."""

    @abc.abstractmethod
    async def renew_host(self, host: str, lease_until: float) -> None:
        """Move the host's lease on (its claims hold while it is ahead)."""

    @abc.abstractmethod
    async def hosts(self) -> list[HostRecord]: ...

    @abc.abstractmethod
    async def claim(self, instance_id: str, host: str, now: float) -> tuple[InstanceRecord, bool]:
        """Claim a runnable instance for `host`'s wake-up, atomically: it must be queued, or
        waiting with no wake time or one that has passed, and owned by nobody, by `host`, or by
        a host whose lease lapsed. A claim moves the generation on (fencing out any wake-up of
        a host that lost its lease). Return the record (claimed or not) and whether it was
        claimed; `InstanceNotFound` if there is none."""

    async def claim_batch(self, instance_ids: list[str], host: str, now: float) -> list[Claim]:
        """`claim` for many instances at once, each with its steps when it was claimed: one
        transaction where the backend can (the scheduler starts many wake-ups in one loop
        turn: due timers, a burst of creates). A missing instance's entry is `(None, False,
        [])`; a backend failure fails the whole batch. This default claims one by one."""
        out: list[Claim] = []
        for instance_id in instance_ids:
            try:
                record, claimed = await self.claim(instance_id, host, now)
            except InstanceNotFound:
                out.append((None, False, []))
                continue
            out.append((record, claimed, await self.steps(instance_id) if claimed else []))
        return out

    @abc.abstractmethod
    async def claimable(self, host: str, now: float, limit: int) -> list[tuple[str, str | None]]:
        """(id, tenant) of up to `limit` instances due now that no live host owns (this one
        included: its own running wake-ups are left alone), oldest first: what `host` may take
        over (the safety net behind notifications). A backend may claim them for `host` here."""

    @abc.abstractmethod
    async def request_pause(self, instance_id: str, now: float) -> str:
        """Pause atomically: "paused" if no live host runs it, else "waitingForPause" (the
        running wake-up's last write turns it into "paused"). Return the status now held;
        `InvalidTransition` for a finished instance."""

    # history
    @abc.abstractmethod
    async def add_history(self, instance_id: str, rows: list[HistoryRow]) -> None:
        """Append entries to the instance's history (`InstanceNotFound` if there is none)."""

    @abc.abstractmethod
    async def history(self, instance_id: str, limit: int = 10_000) -> list[HistoryRecord]:
        """The instance's history, oldest first."""

    # children and retention
    @abc.abstractmethod
    async def children(self, parent: str) -> list[str]:
        """Ids of the unfinished instances whose parent is `parent`."""

    @abc.abstractmethod
    async def purge_finished(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` finished instances (complete, errored, terminated) last updated
        before `before`, with their steps and events; return how many."""

    # notifications between hosts (a single-host store needs none)
    async def notify(self, message: str) -> None:
        """Tell every host sharing the store (including this one); a no-op on one host."""
        return None

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Hear every host's `notify`; a no-op where there is only one host."""
        return None

    # hot-path metrics, per tenant per minute
    @abc.abstractmethod
    async def add_metrics(self, rows: list[tuple[str, int, str, float, float]]) -> None:
        """Add (tenant, minute, name, count, total) to the running sums."""

    @abc.abstractmethod
    async def metrics(self, since_minute: int = 0) -> list[tuple[str, int, str, float, float]]:
        """(tenant, minute, name, count, total) from `since_minute` on."""

    # bulk reads: `dynworkers export` (runtime.daemon.transfer) reads everything through these
    @abc.abstractmethod
    async def all_instances(self, after: str = "", limit: int = 500) -> list[InstanceRecord]:
        """Up to `limit` instances of every status whose id sorts after `after`, by id: page
        through all of them by passing the last id seen."""

    @abc.abstractmethod
    async def events(self, instance_id: str) -> list[EventRecord]:
        """The instance's buffered events (not yet taken), in the order they leave."""


#: durability -> SQLite's `synchronous`: "full" survives a power loss, "process" survives kill -9
#: of the host but not a power loss (see engine.sqlite_store)
DURABILITY = {"full": "FULL", "process": "NORMAL"}


def check_durability(durability: str) -> str:
    """`durability` if it is one the stores know, else a StoreError that lists them."""
    if durability not in DURABILITY:
        raise StoreError(
            f"durability must be one of {', '.join(map(repr, DURABILITY))}, got {durability!r}"
        )
    return durability


def settle_pause(status: str, fields: dict[str, object]) -> dict[str, object]:
    """The fields a fenced write of a wake-up applies, given the instance's `status` now: a
    wake-up that suspends while a pause waits for it (waitingForPause) leaves it paused."""
    if status == "waitingForPause" and fields.get("status") in ("waiting", "queued"):
        return {**fields, "status": "paused"}
    return fields


def open_store(url: str, durability: str = "full") -> Store:
    """A store for `url`: `sqlite:///relative/or/absolute/path.db`, or
    `postgresql://user:password@host:port/database` (needs `pip install 'dynworkers[postgres]'`).

    `durability` applies to SQLite; PostgreSQL commits as its server is configured (a host's
    kill -9 loses nothing there either way)."""
    check_durability(durability)
    if url.startswith("sqlite:///"):
        from dynworkers.engine.sqlite_store import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), durability)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from dynworkers.engine.postgres_store import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store needs psycopg ({exc}): pip install 'dynworkers[postgres]'"
            ) from None
        return PostgresStore(url)
    raise StoreError(
        f"unknown store URL {url!r}: use sqlite:///path.db or postgresql://user@host/database"
    )
