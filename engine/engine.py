"""The Engine: durable workflow instances on a store, woken through the supervisor's pool.

Host side, an async context manager on the caller's event loop. It owns the store, the
scheduler and the hot-path figures; it never forks or compiles: a wake-up hands the workflow's
`run(event, step)` to the registered entrypoint, which reaches the tenant's sandbox through the
loader (a cold start if the tenant was evicted) or runs a host-side workflow in a thread.

Every instance operation is one store transaction. Operations on a running instance are fenced by
a generation number kept in the store: after terminate, restart or delete, the running wake-up can
record nothing, and its sandbox call is abandoned (see `session`). A store failure during a
wake-up is retried with a backoff (`store_failed`), logged and counted (`stats()`), and never
errors the instance.
After a crash of the host, `start()` resumes every unfinished instance from the store; a step
whose result was recorded never runs again, an attempt that was in flight runs again.

Failures reach callers typed (`engine.errors`); failures of a wake-up become the instance's
status and error, never an exception out of the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from dynworkers.engine import history, rules
from dynworkers.engine.children import Children
from dynworkers.engine.claims import ClaimBatcher
from dynworkers.engine.errors import EngineClosed, InvalidInput, InvalidTransition, UnknownWorkflow
from dynworkers.engine.hosts import HostLease, new_host_id
from dynworkers.engine.hotpath import HotPath
from dynworkers.engine.instances import Instance, Workflow
from dynworkers.engine.retention import DEFAULT_RETENTION_S, Retention
from dynworkers.engine.scheduler import Clock, Scheduler
from dynworkers.engine.store import (
    InstanceExists,
    InstanceNotFound,
    InstanceRecord,
    Store,
    StoreError,
    open_store,
)
from dynworkers.engine.wakeup import wake_up

if TYPE_CHECKING:
    from dynworkers.engine.session import StepSession
    from dynworkers.runtime import Supervisor

log = logging.getLogger("dynworkers.engine")
#: (tenant or "", outcome, seconds): a step attempt ended "complete", "failed" or "retry"
StepObserver = Callable[[str, str, float], None]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode

FINISHED = frozenset({"complete", "errored", "terminated"})
STATUSES = (
    "queued",
    "running",
    "paused",
    "errored",
    "terminated",
    "complete",
    "waiting",
    "waitingForPause",
    "unknown",
)


class Engine:
    def __init__(
        self,
        supervisor: Supervisor | None = None,
        store: str | Store | None = None,
        *,
        clock: Clock | None = None,
        max_running: int = 64,
        max_steps: int = rules.DEFAULT_MAX_STEPS,
        env: Any = None,
        metrics_interval: float = 5.0,
        host: str | None = None,
        address: str = "",
        lease: float = 5.0,
        poll_interval: float = 1.0,
        retention: float | None = DEFAULT_RETENTION_S,
        durability: str = "full",
    ) -> None:
        self.supervisor = supervisor
        if store is None:
            state = Path(supervisor.config.state_dir) if supervisor else Path(".dynworkers")
            store = f"sqlite:///{state / 'engine.db'}"
        self.store = open_store(store, durability) if isinstance(store, str) else store
        self.clock = clock or Clock()
        if max_steps < 1:
            raise InvalidInput("max_steps must be >= 1")
        self.max_steps = max_steps
        #: seconds a wake-up may spend outside any step (a step's own timeout applies within it)
        self.run_deadline = supervisor.config.deadline if supervisor else 30.0
        self.env = env
        self.metrics_interval = metrics_interval
        self.hotpath = HotPath()
        #: told of each step attempt's duration, from `begin` to its outcome (the daemon's
        #: metrics); called on the engine's loop, so keep them cheap
        self.step_observers: list[StepObserver] = []
        self.workflows: dict[str, Workflow] = {}
        self.scheduler = Scheduler(self._wake, self.clock, max_running)
        #: this engine among those sharing the store: its id, lease and safety-net poll
        self.host = host or new_host_id()
        self.lease = HostLease(
            self.store,
            self.scheduler,
            self.clock,
            self.host,
            address=address,
            lease=lease,
            poll_interval=poll_interval,
        )
        self.children = Children(self.store, self.scheduler, self.clock)
        #: wake-ups' claims, one store transaction per loop turn's worth
        self.claims = ClaimBatcher(self.store, self.host, self.clock)
        #: finished instances are purged this many seconds after they ended (None: kept)
        self.retention = Retention(self.store, self.clock, retention)
        self._sessions: dict[str, StepSession] = {}  # the running wake-ups, by instance
        self._store_retries: dict[str, int] = {}  # wake-ups in a row a store failure stopped
        #: wake-ups a store failure stopped, since start (logged, and in /metrics)
        self.store_failures = 0
        #: wake-ups this host claimed and ran, since start
        self.wake_ups = 0
        self._pause: set[str] = set()
        self._parked: dict[str, list[tuple[str, str | None]]] = {}  # workflow not registered yet
        self.losses: dict[str, int] = {}  # sandbox losses outside a step, per instance
        self._flusher: asyncio.Task[None] | None = None
        self.started = False
        self.closed = False

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.store.open()
        self.store.subscribe(self._on_notice)
        await self.lease.start()
        self.started = True
        _running.append(self)
        if self.supervisor is not None:
            self.supervisor.metrics.observers.append(self._observe)
            self.supervisor.extra_stats["workflows"] = self.stats
        self.scheduler.start()
        await self._recover()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_metrics())
        self.retention.start()

    async def _recover(self) -> None:
        """Bring back every unfinished instance: the store is the truth after a crash."""
        for instance_id, status, tenant, wake_at in await self.store.unfinished():
            if status == "queued":
                self.scheduler.ready(instance_id, tenant)
            elif status == "waiting" and wake_at is not None:
                self.scheduler.at(instance_id, tenant, wake_at)
            elif status == "waitingForPause":  # it was running when asked to pause
                await self.store.request_pause(instance_id, self.clock.now())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self in _running:
            _running.remove(self)
        await self.scheduler.close()
        await self.claims.close()
        await self.lease.close()
        await self.retention.close()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self.supervisor is not None:
            with contextlib.suppress(ValueError):
                self.supervisor.metrics.observers.remove(self._observe)
            self.supervisor.extra_stats.pop("workflows", None)
        if self.started:
            with contextlib.suppress(Exception):
                await self.hotpath.flush(self.store)
            await self.store.close()

    def _check_open(self) -> None:
        if not self.started or self.closed:
            raise EngineClosed("the engine is not running: use `async with Engine(...)`")

    # --- workflows -------------------------------------------------------------------------------

    def register(self, name: str, entrypoint: Any) -> Workflow:
        """Register a workflow: a dynamic entrypoint, a loader entrypoint stub of a tenant's
        workflow class, or a host-side `WorkflowEntrypoint` subclass."""
        if not isinstance(name, str) or not rules.WORKFLOW_NAME.fullmatch(name):
            raise InvalidInput(
                f"workflow name {name!r} is not valid: 1-64 characters of letters, digits, "
                "- and _, not starting with -"
            )
        if name in self.workflows:
            raise InvalidInput(f"workflow {name!r} is already registered")
        workflow = Workflow(self, name, entrypoint)
        self.workflows[name] = workflow
        for instance_id, tenant in self._parked.pop(name, []):
            self.scheduler.ready(instance_id, tenant)
        return workflow

    def workflow(self, name: str) -> Workflow:
        try:
            return self.workflows[name]
        except KeyError:
            raise UnknownWorkflow(
                f"no workflow {name!r} is registered; registered: {sorted(self.workflows)}"
            ) from None

    # --- instance operations ---------------------------------------------------------------------

    @staticmethod
    def batch_items(items: object) -> list[tuple[str | None, Any]]:
        try:
            return rules.batch_items(items)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    async def create(
        self,
        workflow: str,
        pairs: list[tuple[str | None, Any]],
        *,
        tenant: str | None = None,
        strict: bool = False,
        namespace: str | None = None,
    ) -> list[str]:
        """Create instances; return the ids created. `strict`: an existing id is an error.

        A tenant's instance is `<tenant>/<id>`, or `<tenant>/<namespace>:<id>` when it was
        created through a binding that names its workflow (ids are unique per workflow)."""
        self._check_open()
        self.workflow(workflow)
        now = self.clock.now()
        records, seen = [], set()
        for given, params in pairs:
            try:
                local = uuid.uuid4().hex if given is None else rules.check_instance_id(given)
                payload = rules.check_size(_encode(params), "the instance's params")
            except (TypeError, ValueError, msgspec.EncodeError) as exc:
                raise InvalidInput(str(exc)) from None
            scoped = local if namespace is None else f"{namespace}{rules.WORKFLOW_SEPARATOR}{local}"
            instance_id = scoped if tenant is None else f"{tenant}/{scoped}"
            if instance_id in seen:
                raise InvalidInput(f"instance id {local!r} appears twice in one batch")
            seen.add(instance_id)
            records.append(
                InstanceRecord(instance_id, workflow, "queued", payload, now, now, tenant)
            )
        created = await self.store.create_instances(records)
        if strict and not created:
            raise InstanceExists(f"an instance with id {records[0].id!r} already exists")
        for instance_id in created:
            self.scheduler.ready(instance_id, tenant, due=now)
        return created

    async def record(self, instance_id: str) -> InstanceRecord:
        self._check_open()
        return await self.store.get_instance(instance_id)

    def instance(self, instance_id: str) -> Instance:
        return Instance(self, instance_id)

    async def status(self, instance_id: str) -> dict[str, Any]:
        record = await self.record(instance_id)
        status = record.status
        running = instance_id in self.scheduler.running or record.owner is not None
        if running and status in ("queued", "waiting"):
            status = "running"
        return {
            "status": status if status in STATUSES else "unknown",
            "output": _decode(record.output) if record.output is not None else None,
            "error": _decode(record.error) if record.error is not None else None,
        }

    async def history(self, instance_id: str) -> dict[str, Any]:
        """What the instance did: its steps with their attempts, and a timeline of sleeps,
        waits, events and operations (engine.history)."""
        record = await self.record(instance_id)
        steps = await self.store.steps(instance_id)
        entries = await self.store.history(instance_id)
        return history.view(record, steps, entries)

    async def count_instances(self) -> dict[str, int]:
        """How many instances are in each of `STATUSES` (0 when none), one store query.

        As `status()` reports it: an instance a wake-up is running now counts as running (the
        store holds it as queued or waiting); a stored status outside `STATUSES` is unknown."""
        self._check_open()
        stored = await self.store.count_by_status()
        counts = dict.fromkeys(STATUSES, 0)
        for status, count in stored.items():
            counts[status if status in counts else "unknown"] += count
        left = len(self.scheduler.running)
        for status in ("queued", "waiting"):
            moved = min(left, counts[status])
            counts[status] -= moved
            counts["running"] += moved
            left -= moved
        return counts

    async def pause(self, instance_id: str) -> None:
        self._check_open()
        now = self.clock.now()
        status = await self.store.request_pause(instance_id, now)
        await self.store.add_history(instance_id, [history.row(now, "paused", status=status)])
        if status == "waitingForPause":  # a wake-up runs it, here or on another host
            self._pause.add(instance_id)  # it stops after its current step
            await self.store.notify(f"pause {instance_id}")
        else:
            self.scheduler.cancel(instance_id)

    async def resume(self, instance_id: str) -> None:
        record = await self.record(instance_id)
        await self.store.add_history(instance_id, [history.row(self.clock.now(), "resumed")])
        if record.status == "waitingForPause":
            self._pause.discard(instance_id)
            await self.store.update_instance(instance_id, status="queued")
            await self.store.notify(f"resume {instance_id}")
            # running: it goes on, then runs again; not running (it suspended meanwhile): now
            self.scheduler.ready(instance_id, record.tenant)
            return
        if record.status != "paused":
            raise InvalidTransition(
                f"instance {instance_id!r} is {record.status}, not paused: nothing to resume"
            )
        now = self.clock.now()
        if record.wake_at is not None and record.wake_at > now:
            await self.store.update_instance(instance_id, status="waiting", updated=now)
            self.scheduler.at(instance_id, record.tenant, record.wake_at)
        else:
            await self.store.update_instance(instance_id, status="queued", updated=now)
            self.scheduler.ready(instance_id, record.tenant)

    async def terminate(self, instance_id: str, rollback: bool = False) -> None:
        """Stop the instance for good, and its unfinished children (depth first). With
        `rollback`, it wakes once more to run the rollbacks of its recorded steps (newest first,
        each a durable step) and then ends terminated.

        Shielded: when the run terminates itself through its binding, aborting that run ends
        the very call that asked, and the operation must still finish."""
        record = await self.record(instance_id)
        self._refuse_finished(record, "terminated")
        await asyncio.shield(self._terminate(record, rollback))

    async def _terminate(self, record: InstanceRecord, rollback: bool) -> None:
        instance_id = record.id
        now = self.clock.now()
        if rollback:
            fields: dict[str, Any] = {"status": "queued", "waiting_for": rules.ROLLBACK_MARK}
        else:
            fields = {"status": "terminated", "waiting_for": None}
        generation = await self.store.fence(
            instance_id, wake_at=None, owner=None, updated=now, **fields
        )
        # the durable change first, then the running call is aborted
        self._fence(instance_id, generation)
        await self.store.add_history(
            instance_id, [history.row(now, "terminate", rollback=rollback)]
        )
        await self.store.notify(f"fence {instance_id} {generation}")
        if rollback:
            self.scheduler.ready(instance_id, record.tenant)
        else:
            await self.children.finished(
                record, "terminated", error={"name": "Terminated", "message": "terminated"}
            )
        for child in await self.children.unfinished(instance_id):
            with contextlib.suppress(InvalidTransition, InstanceNotFound):
                await self.terminate(child)

    async def restart(self, instance_id: str, from_step: Any = None) -> None:
        """Run again from scratch, or from a recorded step: `from_step` is a name (the first
        `do` step of that name) or `{"name": ..., "count": n, "type": "do"|"sleep"|"wait"}`
        (its n-th occurrence, from 1); the steps recorded before it are kept."""
        record = await self.record(instance_id)
        position = 0
        if from_step is not None:
            try:
                name, occurrence, kind = rules.restart_target(from_step)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            steps = await self.store.steps(instance_id)
            named = [s for s in steps if s.name == name and s.occurrence == occurrence]
            # a bare name means the do step of that name, else the step of any kind so named
            chosen = [s for s in named if s.kind == kind] or (
                named if isinstance(from_step, str) else []
            )
            positions = [s.position for s in chosen]
            if not positions:
                raise InvalidInput(
                    f"instance {instance_id!r} has no recorded {kind} step {name!r} "
                    f"(occurrence {occurrence + 1}): see its steps for the names recorded"
                )
            position = positions[0]
        now = self.clock.now()
        entry = history.row(now, "restarted", from_step=from_step, position=position)
        await self.store.add_history(instance_id, [entry])
        generation = await self.store.restart(instance_id, position, now)
        self._fence(instance_id, generation)
        await self.store.notify(f"fence {instance_id} {generation}")
        self.scheduler.ready(instance_id, record.tenant)

    async def send_event(self, instance_id: str, type: str, payload: Any = None) -> None:
        self._check_open()
        try:
            rules.check_event_type(type)
            if type.startswith(rules.RESERVED_EVENT_PREFIX):
                raise ValueError(f"event types that start with '__' are the engine's: {type!r}")
            data = rules.check_size(_encode(payload), "the event payload")
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise InvalidInput(str(exc)) from None
        now = self.clock.now()
        woke = await self.store.deliver_event(instance_id, type, data, now, now)
        await self.store.add_history(instance_id, [history.row(now, "event sent", type=type)])
        if woke:
            tenant = rules.tenant_of(instance_id) or ""
            self.scheduler.ready(instance_id, tenant or None)
            await self.store.notify(f"wake {instance_id} {tenant}")

    async def delete(self, instance_id: str) -> None:
        """Delete the instance and what it recorded; shielded, as `terminate` is."""
        self._check_open()
        await asyncio.shield(self._delete(instance_id))

    async def _delete(self, instance_id: str) -> None:
        await self.store.delete_instance(instance_id)
        self._fence(instance_id)
        await self.store.notify(f"fence {instance_id}")

    def _refuse_finished(self, record: InstanceRecord, wanted: str) -> None:
        if record.status in FINISHED:
            raise InvalidTransition(
                f"instance {record.id!r} is {record.status}: it cannot be {wanted} "
                "(restart it to run it again)"
            )

    def _fence(self, instance_id: str, generation: int | None = None) -> None:
        """Stop a running wake-up of the instance here at once, and forget its timers; the
        store's generation (moved on by the caller's write) fences it everywhere else. With
        `generation`, only a wake-up that began before it: a newer one (claimed after the
        fence) goes on."""
        session = self._sessions.get(instance_id)
        if session is not None and (generation is None or session.generation < generation):
            session.fenced()
        self._pause.discard(instance_id)
        self._store_retries.pop(instance_id, None)
        self.scheduler.cancel(instance_id)

    def _on_notice(self, message: str) -> None:
        """Another host (or this one) said something about an instance; on the loop."""
        kind, _, rest = message.partition(" ")
        instance_id, _, tenant = rest.partition(" ")
        if not instance_id or self.closed:
            return
        if kind == "wake":  # an event woke it: whoever has a slot first claims it
            self.scheduler.ready(instance_id, tenant or None)
        elif kind == "fence":  # terminated, restarted or deleted through some host
            # "fence <id> <generation>": only wake-ups that began before that generation (a
            # notice can arrive after a newer wake-up started, here or on its sender)
            generation = int(tenant) if tenant.isdigit() else None
            session = self._sessions.get(instance_id)
            if session is not None and (generation is None or session.generation < generation):
                session.fenced()
            if generation is None:  # deleted: nothing of it may run again
                self.scheduler.cancel(instance_id)
        elif kind == "pause" and instance_id in self._sessions:
            self._pause.add(instance_id)
        elif kind == "resume":
            self._pause.discard(instance_id)

    # --- what wake-ups ask -----------------------------------------------------------------------

    async def start_child(
        self, parent: InstanceRecord, name: str, occurrence: int, params: bytes, given: Any
    ) -> str:
        return await self.children.start(parent, name, occurrence, params, given)

    @contextlib.contextmanager
    def running_session(self, session: StepSession) -> Iterator[None]:
        """The wake-up of `session.id` runs here: a fence reaches it through `_fence`."""
        self._sessions[session.id] = session
        try:
            yield
        finally:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]

    def store_failed(self, instance_id: str, error: StoreError) -> None:
        """A store failure stopped a wake-up: run it again after a backoff (0.2 s doubling to
        30 s); the instance keeps its stored status meanwhile."""
        if self.closed:
            return
        self.store_failures += 1
        tries = self._store_retries.get(instance_id, 0) + 1
        self._store_retries[instance_id] = tries
        delay = min(0.2 * 2 ** (tries - 1), 30.0)
        log.warning(
            "store failure during the wake-up of instance %r (%s); trying again in %.1f s",
            instance_id,
            error,
            delay,
        )
        tenant = rules.tenant_of(instance_id)
        self.scheduler.at(instance_id, tenant, self.clock.now() + delay)

    def store_recovered(self, instance_id: str) -> None:
        self._store_retries.pop(instance_id, None)

    def pause_wanted(self, instance_id: str) -> bool:
        return instance_id in self._pause

    def pause_done(self, instance_id: str) -> None:
        self._pause.discard(instance_id)

    async def park(self, record: InstanceRecord) -> None:
        """The instance's workflow is not registered here: release the claim and keep it for
        when the host registers the workflow (another host that has it may take it meanwhile)."""
        await self.store.record(None, record.id, generation=record.generation, owner=None)
        self._parked.setdefault(record.workflow, []).append((record.id, record.tenant))

    async def _wake(self, instance_id: str, due: float) -> None:
        await wake_up(self, instance_id, due)

    # --- hot paths -------------------------------------------------------------------------------

    def note_wake(self, session: StepSession, worker: Any) -> None:
        """A wake-up is about to run: cold if the worker has no live sandbox (None: host)."""
        cold = False
        tenant = session.tenant or ""
        if worker is not None and self.supervisor is not None:
            tenant = worker.worker_id  # the pool's key: boots and evictions use it too
            cold = self.supervisor.sandbox_pid(tenant) is None
        self.hotpath.wake(tenant, cold, session.due_ms, self.clock.now())

    def _observe(self, event: str, tenant: str, value: float) -> None:
        if event == "ready.warm":  # every warm call: the hot paths do not keep it
            return
        self.hotpath.observe(event, tenant, value, self.clock.now())

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_interval)
            try:
                await self.hotpath.flush(self.store)
            except Exception:
                log.warning("could not flush hot-path metrics; kept for the next try")

    async def hot_paths(self, since_minute: int = 0) -> list[dict[str, Any]]:
        """Per tenant per minute: wake.cold, wake.warm, boot_ms, due_to_running_ms and
        evict.<reason>, each with `count` and `total` (durable across restarts)."""
        self._check_open()
        return await self.hotpath.history(self.store, since_minute)

    def stats(self) -> dict[str, Any]:
        return {
            "running": len(self.scheduler.running),
            "ready": self.scheduler.queued,
            "hibernating": self.scheduler.waiting,
            "store_failures": self.store_failures,
            "host": self.host,
            "wake_ups": self.wake_ups,
            "taken_over": self.lease.taken_over,
            **self.hotpath.snapshot(),
        }


#: Engines started in this process, most recent last: `wrap_workflow_binding` finds its engine
#: here when it was not given one.
_running: list[Engine] = []


def running_engine() -> Engine:
    if len(_running) != 1:
        raise EngineClosed(
            f"{len(_running)} engines are running in this process: pass engine= to "
            "wrap_workflow_binding"
            if _running
            else "no engine is running: start one first"
        )
    return _running[0]
