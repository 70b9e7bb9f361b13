"""One wake-up of one instance, host side: the `step` binding granted to the workflow's `run`.

Host side, on the engine's event loop. The session hands the recorded steps to the sandbox (as
the grant's handover) and serves the step object's calls: `begin` (a notification: a step
attempt started; its timeout becomes the call's deadline), `complete`, `fail`, `retry`, `sleep`
and `wait`. Each write is one store transaction and is durable before the answer leaves, so a
step's result is recorded before tenant code sees it. The time from an attempt's `begin` to its
outcome (complete, failed, retry) goes to `engine.step_observers`, when there are any. A quick
step sends its begin with its `complete` (attempt, config, the body's duration; see
engine.replay): one message and one commit a step. The handover allows it (`run_deadline_ms`)
unless tracing is on or the instance's last wake-up lost its sandbox outside any known step.

A session is fenced by the instance's generation, in memory and in the store: after `terminate`,
`restart` or `delete` (on this host or another), its calls fail and write nothing, and the call
running the workflow is abandoned (its sandbox killed), so the tenant's code gets to run no
further step or binding call of that run. Values from the sandbox are checked here again (types,
sizes, config), since the sandbox is not trusted.

A store failure (disk full, I/O error, a lost database) is never the tenant's: the call that hit
it answers "stop" in the form its method expects, the step object suspends the run, nothing is
recorded, and the wake-up is retried after a backoff (`store_failure`). A step whose result did
not commit is an attempt that did not finish: it runs again (at least once).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgspec

from dynworkers.engine import history, rules
from dynworkers.engine.store import (
    EventRecord,
    HistoryRow,
    InstanceNotFound,
    InstanceRecord,
    StaleGeneration,
    StepRecord,
    StoreError,
)
from dynworkers.loader import Binding
from dynworkers.runtime import tracing

if TYPE_CHECKING:
    from dynworkers.engine.engine import Engine

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


#: A step body that ran in under this many ms sends its next first attempt's `begin` with its
#: outcome (engine.replay): the begin's cost matters only beside a body about as short as it.
FOLD_MS = 5


class StaleSession(Exception):
    """The instance was terminated, restarted or deleted while this wake-up ran."""


class StepSession(Binding):
    kind = "step"
    methods = frozenset({"begin", "complete", "fail", "retry", "sleep", "wait", "child"})

    def __init__(self, engine: Engine, record: InstanceRecord, steps: list[StepRecord]) -> None:
        self.engine = engine
        self.id = record.id
        self.tenant = record.tenant
        self.record = record
        #: terminate(rollback=True) asked for this instance's rollbacks: every suspension of
        #: this wake-up keeps the marker, so the next wake-up goes on rolling back
        self.rolling_back = record.waiting_for == rules.ROLLBACK_MARK
        self.steps = steps
        self.by_position = {s.position: s for s in steps}
        #: `do` steps recorded, here and in earlier wake-ups: only they count toward max_steps
        self.do_steps = sum(1 for s in steps if s.kind == "do")
        #: the generation this wake-up began with: every write carries it
        self.generation = record.generation
        #: set when the instance was terminated, restarted or deleted meanwhile
        self.stale = False
        #: the store failure that stopped this wake-up; it runs again after a backoff
        self.store_failure: StoreError | None = None
        #: (position, name, occurrence, attempt, config) of the step attempt running now
        self.in_flight: tuple[int, str, int, int, dict[str, Any]] | None = None
        #: the status and wake time this wake-up already recorded durably, if it suspended
        self.suspended: tuple[str, float | None] | None = None
        #: a sleep's write, started as the sandbox was told to suspend: `flush` awaits it
        self._deferred: asyncio.Task[None] | None = None
        self.recorded = 0  # steps recorded in this wake-up
        self.due_ms = 0.0  # from due to running, for the hot paths
        self._began = 0.0  # perf_counter at the attempt's `begin`, when someone observes steps
        self._attempt_start: float | None = None  # clock time at the attempt's `begin`
        self._control: Any = None
        self._span: Any = None  # the attempt's span, with tracing on (runtime.tracing)

    # --- the grant -------------------------------------------------------------------------------

    def handover(self) -> dict[str, Any]:
        history = []
        for s in self.steps:
            config = _decode(s.config) if s.config else None
            wake = None if s.wake_at is None else int(s.wake_at * 1000)
            history.append(
                [
                    s.kind,
                    s.name,
                    s.status,
                    s.result or s.error,
                    s.attempts,
                    config,
                    wake,
                    s.occurrence,
                    s.position,
                ]
            )
        # a quick step may send its begin with its outcome (engine.replay), unless spans want
        # each attempt's start, or the last wake-up lost its sandbox outside any known step
        fold = not tracing.ENABLED and not self.engine.losses.get(self.id)
        return {
            "history": history,
            "now": int(self.engine.clock.now() * 1000),
            "max_steps": self.engine.max_steps,
            "rollback": self.rolling_back,
            "run_deadline_ms": int(self.engine.run_deadline * 1000) if fold else 0,
            "fold_ms": FOLD_MS if fold else 0,
        }

    def before_run(self, worker: Any) -> None:
        """The runner is known: record the wake-up as cold or warm for the hot paths."""
        self.engine.note_wake(self, worker)

    def granted(self, control: Any) -> None:
        self._control = control

    def current(self) -> bool:
        return not self.stale and not self.engine.closed

    def fenced(self) -> None:
        """The instance was terminated, restarted or deleted: refuse every later call of this
        wake-up and abandon the call that runs it (its sandbox is killed)."""
        self.stale = True
        if self._control is not None:
            self._control.abort(f"workflow instance {self.id!r} was terminated or deleted")

    async def call(
        self, tenant_id: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        if self._deferred is not None:  # a call after a sleep (its suspension was caught)
            await self.flush()
            if self.store_failure is not None:
                return _stopped(method, self.engine.clock.now())
        if not self.current():
            raise StaleSession(f"instance {self.id!r} was terminated, restarted or deleted")
        handler = getattr(self, f"_{method}")
        try:
            return await handler(*args, **kwargs)
        except (StaleGeneration, InstanceNotFound):
            self.fenced()
            raise StaleSession(
                f"instance {self.id!r} was terminated, restarted or deleted"
            ) from None
        except StoreError as exc:
            self.store_failure = exc
            return _stopped(method, self.engine.clock.now())

    async def flush(self) -> None:
        """Wait for the deferred write of a sleep; a fenced or failed one is this wake-up's
        outcome, as it would have been had the call waited for it."""
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            return
        try:
            await deferred
        except (StaleGeneration, InstanceNotFound):
            self.stale = True  # the call has returned: nothing to abort
            self.suspended = None
        except StoreError as exc:
            self.store_failure = exc
            self.suspended = None

    # --- helpers ---------------------------------------------------------------------------------

    def _step(self, position: object, kind: str, name: object, occurrence: object) -> StepRecord:
        """The record of a step call from the sandbox, checked: the sandbox is not trusted."""
        limit = self.engine.max_steps * rules.RECORDS_PER_STEP
        if not isinstance(position, int) or not 0 <= position < limit:
            raise ValueError(f"step position {position!r} is out of range")
        if not isinstance(occurrence, int) or occurrence < 0:
            raise ValueError(f"step occurrence {occurrence!r} is not valid")
        rules.check_step_name(name)
        assert isinstance(name, str)
        known = self.by_position.get(position)
        if known is not None and (known.kind, known.name, known.occurrence) != (
            kind,
            name,
            occurrence,
        ):
            raise ValueError(f"step position {position} holds another step")
        if known is None and kind in ("do", "child") and self.do_steps >= self.engine.max_steps:
            raise ValueError(f"the instance reached its limit of {self.engine.max_steps} steps")
        return StepRecord(self.id, position, kind, name, occurrence, "pending")

    def _recorded(self, step: StepRecord) -> None:
        """`step` is now in the store: later calls of this wake-up know its position."""
        if step.position not in self.by_position:
            self.by_position[step.position] = step
            if step.kind in ("do", "child"):
                self.do_steps += 1

    def _deadline_between_steps(self) -> None:
        self.in_flight = None
        if self._control is not None:
            self._control.set_deadline(self.engine.run_deadline)

    def _waiting(self, wake_at: float | None, waiting_for: str | None = None) -> dict[str, Any]:
        """Instance fields for a suspension, or for a pause asked for meanwhile."""
        status = "paused" if self.engine.pause_wanted(self.id) else "waiting"
        if self.rolling_back:
            waiting_for = rules.ROLLBACK_MARK
        return {
            "status": status,
            "wake_at": wake_at,
            "waiting_for": waiting_for,
            "owner": None,  # the wake-up ends here: its claim is released with the suspension
            "updated": self.engine.clock.now(),
        }

    async def _suspend(
        self,
        step: StepRecord | None,
        fields: dict[str, Any],
        history: list[HistoryRow] | None = None,
    ) -> None:
        """Record a suspension durably; only then is it this wake-up's outcome."""
        await self._write(step, history, **fields)
        self.suspended = (fields["status"], fields["wake_at"])

    async def _write(
        self, step: StepRecord | None, history: list[HistoryRow] | None = None, **fields: Any
    ) -> None:
        await self.engine.store.record(
            step, self.id, generation=self.generation, history=history, **fields
        )
        if step is not None:
            self._recorded(step)

    def _attempt_row(
        self, step: StepRecord, outcome: str, error: Any = None, size: int | None = None
    ) -> HistoryRow:
        """The history entry of the attempt in flight, ending now with `outcome`."""
        number = self.in_flight[3] if self.in_flight else step.attempts or 1
        return history.attempt(
            self.engine.clock.now(),
            name=step.name,
            count=step.occurrence + 1,
            number=number,
            start=self._attempt_start,
            outcome=outcome,
            error=error,
            size=size,
        )

    def _attempt_ended(self, outcome: str) -> None:
        """Tell the engine's step observers how long the attempt in flight took."""
        began, self._began = self._began, 0.0
        if self._span is not None:
            tracing.end_step(self._span, outcome)
            self._span = None
        if began:
            seconds = time.perf_counter() - began
            for observer in self.engine.step_observers:
                observer(self.tenant or "", outcome, seconds)

    async def _finish_step(self, step: StepRecord, entry: HistoryRow) -> str:
        """Record a finished step; answer "pause" if a pause was asked for meanwhile."""
        self.recorded += 1
        self._deadline_between_steps()
        if self.engine.pause_wanted(self.id):
            fields = self._waiting(None)
            fields["status"] = "paused"
            await self._suspend(step, fields, [entry])
            return "pause"
        await self._write(step, [entry])
        return "go"

    # --- calls from the step object --------------------------------------------------------------

    async def _begin(
        self, position: int, name: str, occurrence: int, attempt: int, config: Any
    ) -> None:
        self._step(position, "do", name, occurrence)
        frozen = rules.step_config(config)
        self.in_flight = (position, name, occurrence, int(attempt), frozen)
        self._attempt_start = self.engine.clock.now()
        if self.engine.step_observers:
            self._began = time.perf_counter()
        if tracing.ENABLED:
            self._span = tracing.start_step(self.tenant, self.id, name, int(attempt))
        if self._control is not None:
            self._control.set_deadline(frozen["timeout"] / 1000)

    def _folded_begin(self, step: StepRecord, attempt: Any, config: Any, took_ms: Any) -> None:
        """What `begin` would have set, for an attempt that ran `took_ms` before its outcome."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"step attempt {attempt!r} is not valid")
        if isinstance(took_ms, bool) or not isinstance(took_ms, int | float) or took_ms < 0:
            raise ValueError(f"step duration {took_ms!r} is not valid")
        frozen = rules.step_config(config)
        self.in_flight = (step.position, step.name, step.occurrence, attempt, frozen)
        seconds = min(float(took_ms), frozen["timeout"]) / 1000
        self._attempt_start = self.engine.clock.now() - seconds
        if self.engine.step_observers:
            self._began = time.perf_counter() - seconds

    async def _complete(
        self,
        position: int,
        kind: str,
        name: str,
        occurrence: int,
        payload: bytes,
        attempt: Any = None,
        config: Any = None,
        took_ms: Any = None,
    ) -> str:
        if kind != "do" or not isinstance(payload, bytes):
            raise TypeError("complete(position, 'do', name, occurrence, result bytes)")
        rules.check_size(payload, f"the result of step {name!r}")
        step = self._step(position, kind, name, occurrence)
        if attempt is not None:  # a quick step's begin, folded into its outcome
            self._folded_begin(step, attempt, config, took_ms)
        attempts = self.in_flight[3] if self.in_flight else 1
        self._attempt_ended("complete")
        entry = self._attempt_row(step, "complete", size=len(payload))
        done = replace(step, status="complete", result=payload, attempts=attempts)
        if self.in_flight and self.in_flight[4].get("sensitive"):
            done = replace(done, config=_encode(self.in_flight[4]))  # history redacts it
        return await self._finish_step(done, entry)

    async def _fail(self, position: int, name: str, occurrence: int, error: Any) -> str:
        step = self._step(position, "do", name, occurrence)
        failure = _failure(error)
        attempts = self.in_flight[3] if self.in_flight else 1
        self._attempt_ended("failed")
        entry = self._attempt_row(step, "failed", _decode(failure))
        done = replace(step, status="failed", error=failure, attempts=attempts)
        if self.in_flight and self.in_flight[4].get("sensitive"):
            done = replace(done, config=_encode(self.in_flight[4]))
        return await self._finish_step(done, entry)

    async def _retry(
        self,
        position: int,
        name: str,
        occurrence: int,
        attempts: int,
        config: Any,
        delay_ms: Any = None,
        error: Any = None,
    ) -> int:
        step = self._step(position, "do", name, occurrence)
        frozen = rules.step_config(config)
        delay = None if delay_ms is None else rules.duration_ms(delay_ms, "retry delay")
        failure = _decode(_failure(error)) if isinstance(error, dict) else None
        return await self.schedule_retry(step, int(attempts), frozen, delay, failure)

    async def schedule_retry(
        self,
        step: StepRecord,
        attempts: int,
        config: dict[str, Any],
        delay: int | None = None,
        error: dict[str, str] | None = None,
        outcome: str = "retry",
    ) -> int:
        """Record a failed attempt that will be retried, and hibernate until it is due (after
        `delay` ms when the tenant's delay function gave one, else as the config says)."""
        if delay is None:
            delay = rules.retry_delay_ms(config, attempts)
        wake_at = self.engine.clock.now() + delay / 1000
        pending = replace(step, attempts=attempts, config=_encode(config), wake_at=wake_at)
        self._attempt_ended("retry")
        entry = self._attempt_row(pending, outcome, error)
        self.recorded += 1
        self.in_flight = None
        await self._suspend(pending, self._waiting(wake_at), [entry])
        return int(wake_at * 1000)

    async def _sleep(
        self, position: int, name: str, occurrence: int, delay_ms: Any, until_ms: Any
    ) -> int | None:
        step = self._step(position, "sleep", name, occurrence)
        now = self.engine.clock.now()
        if until_ms is not None:
            wake_at = rules.duration_ms(until_ms, "sleep_until") / 1000
        else:
            wake_at = now + rules.duration_ms(delay_ms, "sleep duration") / 1000
        self.recorded += 1
        if wake_at <= now:
            await self._write(replace(step, status="complete"))
            return None
        entry = history.row(now, "sleep", name=name, count=occurrence + 1, until=wake_at)
        # The sandbox can do nothing but suspend now, so it is told at once and its sandbox is
        # free for the next wake-up while the sleep commits; the wake-up ends only once the
        # write is durable (`flush`). A crash before the commit leaves the instance as it was
        # before this call: it runs again from the top and sleeps then.
        fields = self._waiting(wake_at)
        write = self._write(replace(step, wake_at=wake_at), [entry], **fields)
        self._deferred = asyncio.get_running_loop().create_task(write)
        self.suspended = (fields["status"], fields["wake_at"])
        return int(wake_at * 1000)

    async def _wait(
        self, position: int, name: str, occurrence: int, type: str, timeout_ms: Any
    ) -> dict[str, Any]:
        step = self._step(position, "wait", name, occurrence)
        rules.check_event_type(type)
        now = self.engine.clock.now()
        previous = self.by_position.get(position)
        if previous is not None and previous.kind == "wait" and previous.wake_at is not None:
            wake_at = previous.wake_at  # the timeout was fixed when the wait began
        else:
            wake_at = now + rules.duration_ms(timeout_ms, "wait timeout") / 1000
        timed_out = wake_at <= now
        if timed_out:  # unless an event is buffered after all: then it wins
            timeout = _failure({"name": "WaitTimeout", "message": f"no {type!r} event"})
            pending, fields = replace(step, status="failed", error=timeout), {}
        else:
            pending, fields = replace(step, wake_at=wake_at), self._waiting(wake_at, type)
        # one transaction: take a buffered event, or record the wait (see Store.wait_for_event)
        event = await self.engine.store.wait_for_event(
            pending, type, _event_bytes, generation=self.generation, **fields
        )
        self._recorded(pending)
        self.recorded += 1
        count = occurrence + 1
        if event is not None:
            entry = history.row(now, "event", name=name, count=count, type=type, seq=event.seq)
        elif timed_out:
            entry = history.row(now, "timeout", name=name, count=count, type=type)
        else:
            entry = history.row(now, "wait", name=name, count=count, type=type, until=wake_at)
        await self.engine.store.add_history(self.id, [entry])
        if event is not None:
            control = "go"
            if self.engine.pause_wanted(self.id):
                await self._suspend(None, self._waiting(None))
                control = "pause"
            return {"status": "event", "event": _event_bytes(event), "control": control}
        if timed_out:
            return {"status": "timeout"}
        self.suspended = (fields["status"], wake_at)
        return {"status": "wait", "wake": int(wake_at * 1000)}

    async def _child(
        self, position: int, name: str, occurrence: int, params: Any, child_id: Any
    ) -> str:
        """Start a child instance (once: its id is derived from this step unless given) and
        record the step with the child's id."""
        step = self._step(position, "child", name, occurrence)
        if not isinstance(params, bytes):
            raise TypeError("child(position, name, occurrence, params bytes, id)")
        rules.check_size(params, f"the params of child {name!r}")
        local = await self.engine.start_child(self.record, name, occurrence, params, child_id)
        entry = history.row(
            self.engine.clock.now(), "child", name=name, count=occurrence + 1, child=local
        )
        await self._write(
            replace(step, status="complete", result=_encode(local), attempts=1), [entry]
        )
        self.recorded += 1
        return local

    # --- losses the engine reports ---------------------------------------------------------------

    async def attempt_lost(self, name: str, message: str) -> bool:
        """The sandbox died or timed out during a step attempt: count it as a failed attempt.

        True if there was an attempt in flight (and it is now recorded)."""
        if self.in_flight is None or not self.current():
            return False
        position, step_name, occurrence, attempt, config = self.in_flight
        step = StepRecord(self.id, position, "do", step_name, occurrence, "pending")
        if attempt > config["retries"]["limit"]:
            failure = _failure({"name": name, "message": message})
            self._attempt_ended("failed")
            fields = {"status": "queued", "wake_at": None, "updated": self.engine.clock.now()}
            failed = replace(step, status="failed", error=failure, attempts=attempt)
            entry = self._attempt_row(failed, "lost", _decode(failure))
            # the claim stays: this host runs it again at once (`_lost` readies it)
            await self._suspend(failed, fields, [entry])
        else:
            lost = {"name": name[:256], "message": message[:4096]}
            await self.schedule_retry(step, attempt, config, error=lost, outcome="lost")
        return True


def _stopped(method: str, now: float) -> Any:
    """The answer that makes the step object suspend the run, in the form `method` returns:
    "stop" for complete and fail, a wake time for retry, sleep and wait."""
    now_ms = int(now * 1000)
    if method in ("complete", "fail"):
        return "stop"
    if method == "wait":
        return {"status": "wait", "wake": now_ms}
    return now_ms


def _failure(error: Any) -> bytes:
    if not isinstance(error, dict):
        raise TypeError("a step failure is {'name': str, 'message': str}")
    name, message = str(error.get("name", "Error"))[:256], str(error.get("message", ""))[:4096]
    return _encode({"name": name, "message": message})


def _event_bytes(event: EventRecord) -> bytes:
    return _encode(
        {"type": event.type, "payload": _decode(event.payload), "timestamp": event.timestamp}
    )
