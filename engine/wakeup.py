"""One wake-up of one instance: load its records, run its workflow, settle the outcome.

Host side, on the engine's event loop, in a task the scheduler started. The workflow runs in the
tenant's sandbox through the loader (a dynamic entrypoint or a tenant's entrypoint stub), or in
a worker thread for a host-side `WorkflowEntrypoint` subclass.

How a wake-up ends:
- the workflow returned: the instance is complete with its output;
- it suspended (retry delay, sleep, wait, pause): the step session already recorded that, and
  the instance goes on the timer heap. A sleep's write is the one exception to "recorded before
  the sandbox hears": the sandbox is told to suspend at once and serves the next wake-up while
  the sleep commits, and this wake-up ends once it is durable (`StepSession.flush`); a crash in
  between leaves the instance as it was before the sleep, to run again from the top. When the
  handover allows folding (as for a quick step's begin), a new sleep makes no call at all: it
  travels in the run's outcome (`"sleep"`: the call's arguments), which ends the run anyway, and
  is recorded here through the same session handler, one round trip fewer per sleep;
- `run()` raised (or replay found a determinism error): errored, with `name` and `message`;
- the sandbox died or passed its deadline during a step attempt: that attempt failed (a retry
  is scheduled, or the step fails for good); outside any step: the wake-up runs again, and
  after `MAX_LOSSES` losses in a row that were the tenant's fault the instance is errored;
- the supervisor evicted the sandbox for its own reasons (capacity, idle, manual, shutdown,
  redeploy): the wake-up simply runs again; nothing recorded is lost;
- the store failed (disk full, I/O error, a lost database): never the tenant's fault. Nothing
  more is written, the instance keeps its status, and the wake-up runs again after a backoff
  (`Engine.store_failed`) until the store takes writes again;
- the instance was terminated, restarted or deleted meanwhile (here or on another host): every
  write is fenced by its generation, so the wake-up ends having written nothing more.

Every write a wake-up makes carries the generation it began with (`Store.record(...,
generation=)`), and a pause asked for while it ran is settled when it suspends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from dynworkers.engine import history, rules
from dynworkers.engine.dispatch import DynamicWorkflowEntrypoint, WorkflowContext, run_runner
from dynworkers.engine.errors import EngineClosed
from dynworkers.engine.replay import WorkflowEntrypoint, run_workflow
from dynworkers.engine.session import StaleSession, StepSession
from dynworkers.engine.store import InstanceNotFound, InstanceRecord, StaleGeneration, StoreError
from dynworkers.runtime import tracing
from dynworkers.runtime.errors import PoolBusy, SandboxError, SupervisorClosed, TenantError

if TYPE_CHECKING:
    from dynworkers.engine.engine import Engine

log = logging.getLogger("dynworkers.engine")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode

#: Consecutive sandbox losses outside any step (crash, memory, deadline) before erroring.
MAX_LOSSES = 3
#: Eviction reasons that are the tenant's doing, counted against its attempts.
TENANT_FAULTS = frozenset({"crash", "memory", "deadline", "protocol"})


async def wake_up(engine: Engine, instance_id: str, due: float) -> None:
    if tracing.ENABLED:  # a span for the wake-up, its invoke and step attempts beneath it
        with tracing.wake_up_span(instance_id):
            return await _wake_up_settled(engine, instance_id, due)
    await _wake_up_settled(engine, instance_id, due)


async def _wake_up_settled(engine: Engine, instance_id: str, due: float) -> None:
    try:
        await _wake_up(engine, instance_id, due)
    except (StaleGeneration, StaleSession):
        return  # fenced: whoever fenced it wrote the instance's new state
    except InstanceNotFound:
        return  # deleted meanwhile
    except StoreError as exc:
        engine.store_failed(instance_id, exc)


async def _wake_up(engine: Engine, instance_id: str, due: float) -> None:
    now = engine.clock.now()
    record, claimed, steps = await engine.claims.claim(instance_id)  # batched with others
    if record is None:  # the batcher raises InstanceNotFound instead; for the type checker
        raise InstanceNotFound(f"no workflow instance {instance_id!r}")
    if not claimed:
        if record.status == "waiting" and record.wake_at is not None and record.wake_at > now:
            engine.scheduler.at(instance_id, record.tenant, record.wake_at)  # woken early
        return  # paused, finished, terminated, or another live host runs it
    engine.wake_ups += 1
    if tracing.ENABLED:
        tracing.annotate(tenant=record.tenant or "", workflow=record.workflow)
    workflow = engine.workflows.get(record.workflow)
    if workflow is None:
        await engine.park(record)  # runs when the host registers the workflow
        return
    session = StepSession(engine, record, steps)
    session.due_ms = max(0.0, now - due) * 1000
    local = rules.local_id(record.id, record.tenant)
    event = {
        "payload": _decode(record.params),
        "timestamp": record.created,
        "instance_id": local,
        "workflow_name": record.workflow,
    }
    with engine.running_session(session):
        try:
            try:
                outcome = await _run(engine, workflow.entrypoint, event, session, record)
            finally:
                await session.flush()  # a sleep's write, deferred until the sandbox let go
        except (SupervisorClosed, EngineClosed, StaleSession):
            return  # shutting down, or fenced: the store holds what happened
        except PoolBusy:
            engine.scheduler.at(instance_id, record.tenant, engine.clock.now() + 0.05)
            return
        except SandboxError as exc:
            await _lost(engine, session, record, exc)
            return
        except TenantError as exc:
            await _settle(engine, session, {"name": exc.type_name, "message": exc.message})
            return
        except Exception as exc:  # the loader callback, the envelope, a host workflow's run()
            if session.store_failure is not None:
                raise session.store_failure from None
            await _settle(engine, session, {"name": type(exc).__name__, "message": str(exc)})
            return
        await _outcome(engine, session, record, outcome)


async def _run(
    engine: Engine,
    entrypoint: Any,
    event: dict[str, Any],
    session: StepSession,
    record: InstanceRecord,
) -> Any:
    if isinstance(entrypoint, DynamicWorkflowEntrypoint):
        ctx = WorkflowContext(record.id, record.workflow, record.tenant, record.version)
        return await entrypoint.dispatch(engine, event, session, ctx)
    if isinstance(entrypoint, type) and issubclass(entrypoint, WorkflowEntrypoint):
        engine.note_wake(session, None)
        instance = entrypoint(None, engine.env)
        transport = _ThreadTransport(session, asyncio.get_running_loop())
        handover = session.handover()
        return await asyncio.to_thread(run_workflow, instance, event, transport, handover)
    return await run_runner(entrypoint, event, session)


class _ThreadTransport:
    """A host-side workflow's step object, calling the session on the loop from its thread."""

    def __init__(self, session: StepSession, loop: asyncio.AbstractEventLoop) -> None:
        self._session = session
        self._loop = loop

    def call(self, method: str, *args: Any) -> Any:
        call = self._session.call("", method, list(args), {})
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def notify(self, method: str, *args: Any) -> None:
        self.call(method, *args)


async def _outcome(
    engine: Engine, session: StepSession, record: InstanceRecord, outcome: Any
) -> None:
    instance_id = record.id
    if not session.current():
        return
    if session.store_failure is not None:
        raise session.store_failure
    engine.losses.pop(instance_id, None)
    engine.store_recovered(instance_id)
    if not isinstance(outcome, dict) or outcome.get("s") not in (
        "complete",
        "suspend",
        "terminated",
    ):
        await _settle(engine, session, {"name": "ProtocolError", "message": "bad run outcome"})
        return
    now = engine.clock.now()
    if outcome["s"] == "terminated":  # terminate(rollback=True): its rollbacks all ran
        if not session.rolling_back:
            await _settle(engine, session, {"name": "ProtocolError", "message": "bad outcome"})
            return
        await engine.store.record(
            None,
            instance_id,
            generation=session.generation,
            status="terminated",
            wake_at=None,
            waiting_for=None,
            owner=None,
            updated=now,
            history=[history.row(now, "terminated", rolled_back=outcome.get("rolled_back"))],
        )
        engine.pause_done(instance_id)
        terminated = {"name": "Terminated", "message": "terminated, its steps rolled back"}
        await engine.children.finished(record, "terminated", error=terminated)
        return
    if outcome["s"] == "complete":
        output = outcome.get("output")
        if not isinstance(output, bytes) or len(output) > rules.MAX_PAYLOAD_BYTES:
            await _settle(engine, session, {"name": "ResultError", "message": "bad output"})
            return
        await engine.store.record(
            None,
            instance_id,
            generation=session.generation,
            status="complete",
            output=output,
            wake_at=None,
            waiting_for=None,
            owner=None,
            updated=now,
            history=[history.row(now, "complete", output_bytes=len(output))],
        )
        engine.pause_done(instance_id)
        await engine.children.finished(record, "complete", output=_decode(output))
        return
    why = outcome.get("why")
    if why == "stop":
        return
    folded = outcome.get("sleep")
    recorded = folded is None or session.suspended is not None
    if not recorded and not await _record_folded_sleep(engine, session, record, folded):
        return
    if session.suspended is not None:
        status, wake_at = session.suspended
    else:  # woken before its retry was due, or a folded sleep already over: hibernate until then
        wake = outcome.get("wake")
        wake_at = wake / 1000 if isinstance(wake, int) else None
        status = "paused" if engine.pause_wanted(instance_id) or why == "pause" else "waiting"
        event_type = outcome.get("type") if isinstance(outcome.get("type"), str) else None
        await engine.store.record(
            None,
            instance_id,
            generation=session.generation,
            status=status,
            wake_at=wake_at,
            waiting_for=event_type,
            owner=None,
            updated=now,
        )
    await _schedule(engine, session, record, status, wake_at)


async def _record_folded_sleep(
    engine: Engine, session: StepSession, record: InstanceRecord, folded: Any
) -> bool:
    """Record a sleep that travelled in the run's outcome (engine.replay folds a sleep when the
    handover allows it), exactly as its `sleep` call would have; False when that settled the
    wake-up (a bad outcome). A sleep already over by the host's clock is recorded complete and
    leaves `session.suspended` unset: the caller then writes the instance runnable at once (or
    paused, when a pause was asked for meanwhile), as for a run woken before its time."""
    if not isinstance(folded, list) or len(folded) != 5:
        await _settle(engine, session, {"name": "ProtocolError", "message": "bad folded sleep"})
        return False
    try:
        await session.call("", "sleep", folded, {})
    except (TypeError, ValueError) as exc:  # arguments the sandbox should never have sent
        await _settle(engine, session, {"name": "ProtocolError", "message": str(exc)[:200]})
        return False
    await session.flush()
    if session.store_failure is not None:
        raise session.store_failure
    if session.stale:
        raise StaleSession(f"instance {record.id!r} was terminated, restarted or deleted")
    return True


async def _schedule(
    engine: Engine, session: StepSession, record: InstanceRecord, status: str, wake_at: float | None
) -> None:
    if status != "paused" and engine.pause_wanted(record.id):
        # a pause asked for after the suspension was written: settle it now, or the instance
        # would stay waitingForPause with nobody to finish the pause
        await engine.store.record(
            None,
            record.id,
            generation=session.generation,
            status="paused",
            owner=None,
            updated=engine.clock.now(),
        )
        status = "paused"
    if status == "paused":
        engine.pause_done(record.id)
    elif status == "queued" or (status == "waiting" and wake_at is None):
        engine.scheduler.ready(record.id, record.tenant)
    elif status == "waiting" and wake_at is not None:
        engine.scheduler.at(record.id, record.tenant, wake_at)


async def _settle(engine: Engine, session: StepSession, error: dict[str, str]) -> None:
    """The instance failed for good."""
    if not session.current():
        return
    if session.store_failure is not None:
        raise session.store_failure
    engine.losses.pop(session.id, None)
    engine.store_recovered(session.id)
    engine.pause_done(session.id)
    failure = {"name": error["name"][:256], "message": error["message"][:4096]}
    now = engine.clock.now()
    await engine.store.record(
        None,
        session.id,
        generation=session.generation,
        status="errored",
        error=_encode(failure),
        wake_at=None,
        waiting_for=None,
        owner=None,
        updated=now,
        history=[history.row(now, "errored", error=failure)],
    )
    await engine.children.finished(session.record, "errored", error=failure)


async def _lost(
    engine: Engine, session: StepSession, record: InstanceRecord, exc: SandboxError
) -> None:
    """The sandbox ended during the wake-up."""
    if not session.current():
        return
    if session.store_failure is not None:
        raise session.store_failure
    reason = exc.reason or "crash"
    if reason in TENANT_FAULTS and await session.attempt_lost(type(exc).__name__, str(exc)):
        engine.losses.pop(record.id, None)  # counted against the step's retries instead
    elif session.suspended is None:
        losses = 0 if session.recorded else engine.losses.get(record.id, 0)
        if reason in TENANT_FAULTS:
            losses += 1
        engine.losses[record.id] = losses
        if losses >= MAX_LOSSES:
            message = f"lost its sandbox {losses} times in a row outside any step: {exc}"
            await _settle(engine, session, {"name": type(exc).__name__, "message": message})
            return
        log.info("instance %r lost its sandbox (%s); waking it again", record.id, reason)
        engine.scheduler.ready(record.id, record.tenant)
        return
    if session.suspended is None:
        return
    status, wake_at = session.suspended
    await _schedule(engine, session, record, status, wake_at)
