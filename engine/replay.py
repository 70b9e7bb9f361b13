"""Replay of one workflow wake-up: the `step` object a workflow's `run(event, step)` receives.

Runs inside a tenant's sandbox, in the thread that runs tenant code (and, for host-side
workflows, in a worker thread of the host). Imports nothing from the host side: it talks to the
engine through a `Transport` (two calls: `call` waits for the host's durable answer, `notify`
does not wait).

`run()` re-executes from the top on every wake-up. The host hands over the recorded steps; each
step call here finds its record by its identity, its name and the occurrence of that name in this
execution (as Cloudflare: the name is the cache key), checks that the kind matches, and returns
the recorded result (or re-raises the recorded failure) without running again. A step inserted
earlier in `run()` by a later deploy does not disturb the others. A step without a record is
executed and recorded through the host before its result is returned; it is stored at the next
free position (the order of first execution, which `restart(from_step=...)` uses).

Only `do` steps count toward the step limit; sleeps and waits do not.

A step attempt is announced to the host (`begin`: its timeout becomes the call's deadline, and a
sandbox lost during it counts against its retries) before its body runs; the outcome follows as
one call whose answer is durable. A first attempt of a body that ran in under the host's
`fold_ms` (handover) last time in this process, whose timeout is no shorter than the run's
deadline, sends its begin with its outcome instead: one message a step instead of two. Meanwhile
the run's deadline holds, which is never later than the step's. Should such a body hang or kill
its sandbox after all, the host sees a loss outside any step and wakes the instance again with
folding off (engine.session), so every begin is announced: the attempt may run once more than
its retries say (an attempt in flight runs at least once); a recorded step never runs again.

Both styles of `run`: a plain `def run` gets plain values from the step methods; an `async def
run` (Cloudflare's style) gets awaitables (`await step.do(...)`, `await step.sleep(...)`), and a
step body may itself be `async def`. Step calls still execute one at a time, in call order.

A retry delay, sleep or wait suspends the instance: `Suspend` is a `BaseException`, and the step
object remembers it, so a tenant's bare `except:` that swallows it changes nothing: the outcome
is decided by what the step object recorded, and every later step call raises it again.
"""

from __future__ import annotations

import datetime as _datetime
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import msgspec

from dynworkers.engine import rules
from dynworkers.engine.step_parts import (
    ROLLBACK_PREFIX,
    StepContext,
    StepFunction,
    call_body,
    call_rollback,
    check_depends,
    delay_ms,
    split_delay,
)
from dynworkers.sandbox_policy import aio
from dynworkers.sandbox_policy.namespace import register_safe_type

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class Transport(Protocol):
    def call(self, method: str, *args: Any) -> Any: ...
    def notify(self, method: str, *args: Any) -> None: ...


#: the event type by which a finished child reaches its parent's `wait_for_child`
CHILD_EVENT = "__child__:"
#: Step bodies (name and code) that ran in under the host's `fold_ms` last time in this process:
#: their next first attempt sends its `begin` with its outcome (see `Step._may_fold`). Per
#: process: a sandbox that dies mid-body takes this with it.
MAX_QUICK = 1024
_QUICK: set[tuple[str, Any]] = set()


class Unwind(BaseException):
    """`terminate(rollback=True)`: replay stops at the first step without a result, and the
    recorded steps' rollbacks run."""


class Suspend(BaseException):
    """The instance hibernates here; `why` is retry, sleep, event, pause or stop."""

    def __init__(self, why: str, wake_ms: int | None = None, event_type: str | None = None):
        super().__init__(why)
        self.why = why
        self.wake_ms = wake_ms
        self.event_type = event_type


@register_safe_type
class NonRetryableError(Exception):
    """Raise it from a step body to fail the step at once, without further attempts."""


@register_safe_type
class StepError(Exception):
    """A step failed for good (retries exhausted, or NonRetryableError); replays raise it too.

    `name` is the type of the error the step body raised, `message` its message.
    """

    def __init__(self, step: str, name: str, message: str) -> None:
        super().__init__(f"step {step!r} failed: {name}: {message}")
        self.step = step
        self.name = name
        self.message = message


@register_safe_type
class WaitTimeout(StepError):
    """`step.wait_for_event` reached its timeout without an event of its type."""


@register_safe_type
class NonDeterminismError(Exception):
    """A replayed step does not match its record; the instance fails with this error."""


@register_safe_type
class StepLimitError(Exception):
    """The instance recorded as many steps as the engine allows (`max_steps`)."""


@register_safe_type
class RollbackError(Exception):
    """A rollback failed for good; the rollbacks after it in the chain did not run."""


@register_safe_type
class WorkflowEvent:
    """What `run(event, step)` receives: `payload`, `timestamp`, `instance_id`, `workflow_name`."""

    def __init__(
        self, payload: Any, timestamp: float, instance_id: str, workflow_name: str
    ) -> None:
        self.payload = payload
        self.timestamp = _datetime.datetime.fromtimestamp(timestamp, _datetime.UTC)
        self.instance_id = instance_id
        self.workflow_name = workflow_name

    #: Cloudflare's Python Workflows read the event as a dict: these keys, and the attributes
    _KEYS: ClassVar[dict[str, str]] = {
        "payload": "payload",
        "timestamp": "timestamp",
        "instanceId": "instance_id",
        "instance_id": "instance_id",
        "workflowName": "workflow_name",
        "workflow_name": "workflow_name",
    }

    def __getitem__(self, key: str) -> Any:
        attribute = self._KEYS.get(key) if isinstance(key, str) else None
        if attribute is None:
            raise KeyError(key)
        return getattr(self, attribute)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return ["payload", "timestamp", "instanceId", "workflowName"]


@register_safe_type
class Event:
    """An event delivered to `step.wait_for_event`: `type`, `payload`, `timestamp`."""

    def __init__(self, type: str, payload: Any, timestamp: float) -> None:
        self.type = type
        self.payload = payload
        self.timestamp = _datetime.datetime.fromtimestamp(timestamp, _datetime.UTC)


@register_safe_type
class WorkflowEntrypoint:
    """Base class of a workflow; subclasses define `run(self, event, step)`."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


def _epoch_ms(when: object) -> int:
    if isinstance(when, _datetime.datetime):
        if when.tzinfo is None:
            raise ValueError("sleep_until needs an aware datetime (with tzinfo) or epoch ms")
        return int(when.timestamp() * 1000)
    return rules.duration_ms(when, "sleep_until time")


@register_safe_type
class Step:
    """The `step` argument of `run`: `do`, `sleep`, `sleep_until`, `wait_for_event`."""

    def __init__(self, transport: Transport, handover: dict[str, Any]) -> None:
        self._transport = transport
        history: list[list[Any]] = handover["history"]
        #: (name, occurrence) -> [kind, name, status, result or error, attempts, config, wake,
        #: occurrence, position]
        self._records = {(r[1], r[7]): r for r in history}
        self._now_ms: int = handover["now"]
        self._max_steps: int = handover["max_steps"]
        self._free = max((r[8] for r in history), default=-1) + 1  # the next new step's position
        self._do_steps = sum(1 for r in history if r[0] == "do")
        self._seen: dict[str, int] = {}
        self._halt: BaseException | None = None  # Suspend or a fatal error, sticky
        self._in_step = False
        #: (name, rollback, result) of each step with a rollback, in the order they ran
        self._rollbacks: list[tuple[str, Callable[..., Any], Any]] = []
        #: terminate(rollback=True): replay up to the first step without a result, then undo
        self._unwinding = bool(handover.get("rollback"))
        self._in_rollback = False
        #: the host's deadline for the run between steps (ms), given when it lets a quick
        #: step's `begin` travel with its outcome (0: it does not, e.g. with tracing on)
        deadline, fold = handover.get("run_deadline_ms"), handover.get("fold_ms")
        self._run_deadline_ms = deadline if isinstance(deadline, int) and deadline > 0 else 0
        self._fold_ms = fold if isinstance(fold, int) and fold > 0 else 0
        #: a sleep announced in the run's outcome instead of by a call (when folding is on)
        self._folded_sleep: list[Any] | None = None

    # --- bookkeeping -----------------------------------------------------------------------------

    def _next(self, kind: str, name: object) -> tuple[int, int, list[Any] | None]:
        if self._halt is not None:
            raise self._halt
        if self._in_step:
            raise RuntimeError("steps cannot be nested: call step methods from run(), not a step")
        rules.check_step_name(name)
        assert isinstance(name, str)
        occurrence = self._seen.get(name, 0)
        self._seen[name] = occurrence + 1
        record = self._records.get((name, occurrence))
        unfinished = record is None or record[2] == "pending"
        if self._unwinding and not self._in_rollback and unfinished:
            self._halt = Unwind()
            raise self._halt
        if record is not None:
            if record[0] != kind:
                self._halt = NonDeterminismError(
                    f"step {name!r} (occurrence {occurrence + 1}) was recorded as a {record[0]} "
                    f"step, and this run makes it a {kind} step: the workflow is not "
                    "deterministic; restart the instance, or give the new step a name of its own"
                )
                raise self._halt
            return record[8], occurrence, record
        if kind in ("do", "child"):
            if self._do_steps >= self._max_steps:
                self._halt = StepLimitError(
                    f"the instance reached its limit of {self._max_steps} steps; split the work "
                    "into several instances or raise the engine's max_steps"
                )
                raise self._halt
            self._do_steps += 1
        position = self._free
        self._free += 1
        return position, occurrence, None

    def _suspend(
        self, why: str, wake_ms: int | None = None, event_type: str | None = None
    ) -> Suspend:
        self._halt = Suspend(why, wake_ms, event_type)
        return self._halt

    def _control(self, answer: object) -> None:
        if answer in ("pause", "stop"):
            raise self._suspend(str(answer))

    # --- step.do ---------------------------------------------------------------------------------

    def do(
        self,
        name: Any = None,
        fn: Callable[..., Any] | None = None,
        config: Any = None,
        *,
        rollback: Callable[..., Any] | None = None,
        depends: Any = None,
        concurrent: bool = False,
    ) -> Any:
        """Run `fn` once, durably; with no `fn`, a decorator: `@step.do("name")`, or
        `@step.do()` named after the function (Cloudflare's Python Workflows). `fn` may take a
        `StepContext`; `rollback(result)` runs if the instance later fails (or is terminated
        with rollback); a decorated step's `depends` are step functions whose results it takes
        as arguments (see engine.step_parts)."""
        if fn is None and callable(name):  # `@step.do` without parentheses
            name, fn = getattr(name, "__name__", None), name
        needs = check_depends(depends)
        if fn is None:

            def decorate(body: Callable[..., Any]) -> StepFunction:
                step_name = name if name is not None else getattr(body, "__name__", None)
                rules.check_step_name(step_name)
                assert isinstance(step_name, str)
                return StepFunction(self, step_name, body, config, rollback, needs, concurrent)

            return decorate
        args = [dependency.result() for dependency in needs]
        return aio.ready(self._run_do(name, fn, config, rollback, args))

    def _run_do(
        self,
        name: str,
        fn: Callable[..., Any],
        config: Any,
        rollback: Callable[..., Any] | None,
        args: list[Any],
    ) -> Any:
        if rollback is not None and not callable(rollback):
            raise TypeError(f"step.do({name!r}, rollback=...): rollback must be callable")
        config, delay = split_delay(config)
        value = self._do(name, fn, config, delay, args)
        if rollback is not None:
            self._rollbacks.append((name, rollback, value))
        return value

    def _do(
        self,
        name: str,
        fn: Callable[..., Any],
        config: Any,
        delay: Callable[..., Any] | None = None,
        args: list[Any] | None = None,
    ) -> Any:
        if not callable(fn):
            raise TypeError(f"step.do({name!r}, fn): fn must be callable")
        position, occurrence, record = self._next("do", name)
        attempts = 0
        if record is not None:
            status = record[2]
            if status == "complete":
                return _decode(record[3])
            if status == "failed":
                failure = _decode(record[3])
                raise StepError(name, failure["name"], failure["message"])
            attempts, frozen = record[4], record[5]  # pending: config frozen at attempt 1
            if record[6] is not None and record[6] > self._now_ms:
                raise self._suspend("retry", record[6])
        else:
            frozen = rules.step_config(config)
        begin = (position, name, occurrence, attempts + 1, frozen)
        quick = (name, getattr(fn, "__code__", None))
        folded = self._may_fold(quick, attempts, frozen)
        if not folded:
            self._transport.notify("begin", *begin)
        self._in_step = True
        started = time.perf_counter()
        try:
            ctx = StepContext(attempts + 1, name, occurrence + 1, frozen)
            value = call_body(fn, args or [], ctx)
            if aio.is_awaitable(value):  # an `async def` step body
                value = aio.block_on(value)
            try:
                payload = rules.check_size(_encode(value), f"the result of step {name!r}")
            except (TypeError, ValueError, msgspec.EncodeError) as exc:
                raise NonRetryableError(
                    f"{exc} (a step returns plain data: dict, list, str, "
                    "bytes, int, float, bool, None)"
                ) from None
        except Exception as exc:
            _QUICK.discard(quick)
            if folded:  # the host learns of the attempt before its outcome, as always
                self._transport.notify("begin", *begin)
            attempts += 1
            error = {"name": type(exc).__name__, "message": _message(exc)}
            final = isinstance(exc, NonRetryableError) or attempts > frozen["retries"]["limit"]
            if final:
                self._control(self._transport.call("fail", position, name, occurrence, error))
                raise StepError(name, error["name"], error["message"]) from None
            wait = None if delay is None else delay_ms(delay, attempts, exc)
            wake = self._transport.call(
                "retry", position, name, occurrence, attempts, frozen, wait, error
            )
            raise self._suspend("retry", wake) from None
        finally:
            self._in_step = False
        took_ms = (time.perf_counter() - started) * 1000
        if took_ms < self._fold_ms:
            if len(_QUICK) >= MAX_QUICK:
                _QUICK.clear()  # bounded: a workflow may name its steps without end
            _QUICK.add(quick)
        else:
            _QUICK.discard(quick)
        if folded:  # the begin travels with the outcome: one message for the step
            answer = self._transport.call(
                "complete", position, "do", name, occurrence, payload, attempts + 1, frozen, took_ms
            )
        else:
            answer = self._transport.call("complete", position, "do", name, occurrence, payload)
        self._control(answer)
        return value

    def _may_fold(self, quick: tuple[str, Any], attempts: int, frozen: dict[str, Any]) -> bool:
        """Whether this attempt's `begin` may travel with its outcome instead of before it: the
        host allows it, it is a first attempt, its body ran in under `fold_ms` the last time in
        this process, and its timeout is no shorter than the run's own deadline (so the host's
        deadline for the run, which holds meanwhile, is never later than the step's)."""
        return (
            self._run_deadline_ms > 0
            and self._fold_ms > 0
            and attempts == 0
            and quick[1] is not None
            and quick in _QUICK
            and frozen["timeout"] >= self._run_deadline_ms
        )

    # --- rollbacks -------------------------------------------------------------------------------

    def _roll_back(self) -> list[str]:
        """Run the registered rollbacks, newest first, each as a durable step of its own;
        return the names rolled back. A rollback that fails for good ends the chain."""
        self._halt = None
        self._in_rollback = True
        done: list[str] = []
        chain = list(reversed(self._rollbacks))
        for index, (name, undo, value) in enumerate(chain):

            def body(ctx: StepContext, undo: Any = undo, value: Any = value) -> Any:
                result = call_rollback(undo, value, ctx)
                return aio.block_on(result) if aio.is_awaitable(result) else None

            try:
                self._do(ROLLBACK_PREFIX + name, body, None)
            except StepError as exc:
                left = [n for n, _, _ in chain[index + 1 :]]
                raise RollbackError(
                    f"the rollback of step {name!r} failed: {exc.name}: {exc.message}; "
                    f"rolled back: {done}; not rolled back: {left}"
                ) from None
            done.append(name)
        return done

    # --- child workflows -------------------------------------------------------------------------

    def start_child(self, name: str, params: Any = None, *, id: str | None = None) -> Any:
        """Start a child instance of this workflow with `params`, durably (once); its id. The
        parent may `wait_for_child` it; a terminated parent terminates its children."""
        return aio.ready(self._start_child(name, params, id))

    def _start_child(self, name: str, params: Any, child_id: str | None) -> str:
        position, occurrence, record = self._next("child", name)
        if record is not None and record[2] == "complete":
            return str(_decode(record[3]))
        payload = rules.check_size(_encode(params), f"the params of child {name!r}")
        return str(self._transport.call("child", position, name, occurrence, payload, child_id))

    def wait_for_child(self, name: str, child: str, timeout: Any = "24 hours") -> Any:
        """The output of child `child` once it completes; `StepError` with its error if it
        errored or was terminated; `WaitTimeout` after `timeout`."""
        return aio.ready(self._wait_for_child(name, child, timeout))

    def _wait_for_child(self, name: str, child: str, timeout: Any) -> Any:
        if not isinstance(child, str):
            raise TypeError("wait_for_child takes the id start_child returned")
        event = self._wait_for_event(name, CHILD_EVENT + child, timeout)
        result = event.payload
        if result.get("status") == "complete":
            return result.get("output")
        error = result.get("error") or {"name": "Terminated", "message": f"{child} terminated"}
        raise StepError(name, error["name"], error["message"])

    # --- sleeping and waiting --------------------------------------------------------------------

    def sleep(self, name: str, duration: Any) -> None:
        """Hibernate for `duration` (ms, or "10 seconds", "2 days", ...)."""
        self._sleep(name, rules.duration_ms(duration), None)
        return aio.ready(None)  # type: ignore[no-any-return]

    def sleep_until(self, name: str, when: Any) -> None:
        """Hibernate until an aware `datetime` or epoch milliseconds."""
        self._sleep(name, None, _epoch_ms(when))
        return aio.ready(None)  # type: ignore[no-any-return]

    def _sleep(self, name: str, delay_ms: int | None, until_ms: int | None) -> None:
        position, occurrence, record = self._next("sleep", name)
        if record is not None:
            if record[2] == "complete" or record[6] <= self._now_ms:
                return
            raise self._suspend("sleep", record[6])
        args = (position, name, occurrence, delay_ms, until_ms)
        if self._fold_ms and (until_ms is None or until_ms > self._now_ms):
            # nothing can follow a sleep in this run: it travels in the run's outcome, and the
            # host records it there (one message fewer; see `run_workflow`)
            self._folded_sleep = list(args)
            raise self._suspend("sleep")
        wake = self._transport.call("sleep", *args)
        if wake is not None:
            raise self._suspend("sleep", wake)

    def wait_for_event(self, name: str, type: str, timeout: Any = "24 hours") -> Any:
        """The next event of `type` sent to this instance; `WaitTimeout` after `timeout`."""
        return aio.ready(self._wait_for_event(name, type, timeout))

    def _wait_for_event(self, name: str, type: str, timeout: Any) -> Event:
        rules.check_event_type(type)
        timeout_ms = rules.duration_ms(timeout, "wait_for_event timeout")
        position, occurrence, record = self._next("wait", name)
        if record is not None and record[2] == "complete":
            event = _decode(record[3])
            return Event(event["type"], event["payload"], event["timestamp"])
        if record is not None and record[2] == "failed":
            raise WaitTimeout(name, "WaitTimeout", f"no {type!r} event within the timeout")
        answer = self._transport.call("wait", position, name, occurrence, type, timeout_ms)
        if answer["status"] == "event":
            self._control(answer["control"])
            event = _decode(answer["event"])
            return Event(event["type"], event["payload"], event["timestamp"])
        if answer["status"] == "timeout":
            raise WaitTimeout(name, "WaitTimeout", f"no {type!r} event within the timeout")
        raise self._suspend("event", answer["wake"], type)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)[:4096]
    except Exception:
        return "<the error message could not be rendered>"


def run_workflow(
    entry: WorkflowEntrypoint, event: dict[str, Any], transport: Transport, handover: dict[str, Any]
) -> dict[str, Any]:
    """One wake-up of an instance; the outcome as plain data for the engine.

    `{"s": "complete", "output": bytes}` or `{"s": "suspend", "why": ..., "wake": ms}` (with
    `"sleep": [the sleep call's arguments]` when a sleep was folded into the outcome); an
    exception from `run()` (or a determinism error) propagates to the caller, which reports it
    as the instance's error.
    """
    step = Step(transport, handover)
    workflow_event = WorkflowEvent(
        event["payload"], event["timestamp"], event["instance_id"], event["workflow_name"]
    )
    failure: BaseException | None = None
    output: Any = None
    try:
        output = entry.run(workflow_event, step)  # type: ignore[attr-defined]
        if aio.is_awaitable(output):  # `async def run`
            output = aio.block_on(output)
    except BaseException as exc:
        if step._halt is None:
            failure = exc  # run() failed: the instance errors (after its rollbacks)
    halt = step._halt
    if isinstance(halt, Suspend):
        return _suspended(step, halt)
    if isinstance(halt, Unwind) or (failure is not None and step._rollbacks):
        try:
            rolled_back = step._roll_back()
        except Suspend:  # a rollback waits for its retry: the next wake-up goes on with it
            suspended = step._halt
            assert isinstance(suspended, Suspend)
            return _suspended(step, suspended)
        if isinstance(halt, Unwind):
            return {"s": "terminated", "rolled_back": rolled_back}
    elif halt is not None:
        raise halt
    if failure is not None:
        if isinstance(failure, StepError) and failure.name == "NonRetryableError":
            raise NonRetryableError(failure.message) from None  # the tenant's own error
        raise failure
    payload = rules.check_size(_encode(output), "the workflow's output")
    return {"s": "complete", "output": payload}


def _suspended(step: Step, halt: Suspend) -> dict[str, Any]:
    outcome: dict[str, Any] = {
        "s": "suspend",
        "why": halt.why,
        "wake": halt.wake_ms,
        "type": halt.event_type,
    }
    if step._folded_sleep is not None:  # the host records it: [position, name, occurrence,
        outcome["sleep"] = step._folded_sleep  # delay_ms, until_ms], as a `sleep` call's args
    return outcome
