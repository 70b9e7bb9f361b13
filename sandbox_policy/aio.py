"""The tenant's event loop, and the vetted `asyncio` that tenant code imports.

Runs inside the sandbox process, in the thread that runs tenant code (and, for host-side
workflows, harmlessly in a host worker thread: the state is per thread). Imports only the
standard library; the sandbox plugs its channel in with `install_io`.

Why a loop of our own rather than `asyncio`'s: tenant code must never hold a host object, and an
asyncio loop, task or future hands out the loop itself (`get_loop()`), its selector, its
callbacks and, through them, frames. Here the only objects a tenant can reach are:

- its own coroutines (every attribute is refused by the guards: `cr_frame`, `send`, `throw`...);
- `Pending`, an opaque awaitable with no public attribute (binding calls, `sleep`, tasks);
- the functions of `ASYNCIO_MEMBERS` below.

The loop drives coroutines with `send`/`throw` itself; a coroutine that yields anything but a
`Pending` (only possible through an object with `__await__`, which tenant classes cannot define)
gets a `TypeError` thrown back in. A `BaseException` that is not an `Exception` (a workflow's
suspension) stops the whole run and propagates to the caller unchanged, so tenant code can never
swallow it. The run ends when the handler's coroutine ends; tasks still pending are closed. A run
in which nothing can make progress (tasks waiting on each other) fails with `RuntimeError`. The
host's deadline bounds the wall time of everything here: a coroutine that never ends is killed
with its sandbox, as a synchronous loop would be.

`running()` says whether a tenant coroutine is being driven in this thread: binding calls return
a `Pending` then (Cloudflare's style, `await env.KV.get("k")`), and plain values otherwise, so
synchronous tenant code keeps working unchanged.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol

__all__ = [
    "ASYNCIO_MEMBERS",
    "asyncio_module",
    "CancelledError",
    "IO",
    "Pending",
    "block_on",
    "install_io",
    "is_awaitable",
    "map_result",
    "ready",
    "running",
]


class CancelledError(Exception):
    """Thrown into a tenant task that `wait_for` gave up on.

    It derives from `Exception` (asyncio's derives from `BaseException`): tenant code may not
    raise or catch control flow, and a task that swallows its cancellation only keeps running
    itself, bounded by the call's deadline.
    """


class IO(Protocol):
    """The sandbox's channel, as the loop needs it."""

    def has_pending(self) -> bool: ...
    def wait(self, timeout: float | None) -> None: ...


class _State(threading.local):
    io: IO | None = None
    loop: _Loop | None = None


_state = _State()


def install_io(io: IO | None) -> None:
    """Plug the sandbox's channel in: `wait` delivers replies by resolving `Pending`s."""
    _state.io = io


def running() -> bool:
    """True while a tenant coroutine is driven in this thread."""
    return _state.loop is not None


class Pending:
    """An awaitable result that is not there yet. Opaque to tenant code: no public attribute."""

    __slots__ = ("_callbacks", "_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Pending], None]] = []

    def set_result(self, value: Any) -> None:
        if not self._done:
            self._done, self._value = True, value
            self._fire()

    def set_error(self, error: BaseException) -> None:
        if not self._done:
            self._done, self._error = True, error
            self._fire()

    def _fire(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def _on_done(self, callback: Callable[[Pending], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def _outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def __await__(self) -> Generator[Pending, None, Any]:
        if not self._done:
            yield self  # to the loop, which resumes the awaiting task once this is done
        return self._outcome()

    def __repr__(self) -> str:
        return "<pending>" if not self._done else "<done>"


def ready(value: Any) -> Any:
    """`value` as the current style wants it: awaitable inside a coroutine, plain otherwise."""
    if not running():
        return value
    done = Pending()
    done.set_result(value)
    return done


def map_result(
    value: Any,
    fn: Callable[[Any], Any],
    on_error: Callable[[BaseException], BaseException] | None = None,
) -> Any:
    """`fn(value)`, or a `Pending` of it when `value` is a `Pending` (sync and async API alike);
    `on_error` may translate the error a `Pending` ends with."""
    if not isinstance(value, Pending):
        return fn(value)
    out = Pending()

    def forward(done: Pending) -> None:
        if done._error is not None:
            out.set_error(on_error(done._error) if on_error else done._error)
            return
        try:
            out.set_result(fn(done._value))
        except Exception as exc:
            out.set_error(exc)

    value._on_done(forward)
    return out


def is_awaitable(value: object) -> bool:
    return isinstance(value, Pending | types.CoroutineType)


# the loop ---------------------------------------------------------------------------------------


class _Task(Pending):
    """A coroutine being driven; awaiting the task awaits its outcome."""

    __slots__ = ("_coro", "_throw")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        super().__init__()
        self._coro = coro
        self._throw: BaseException | None = None


class _Loop:
    def __init__(self) -> None:
        self.ready: collections.deque[tuple[_Task, Any]] = collections.deque()
        self.timers: list[tuple[float, int, Pending]] = []
        self.tasks: set[_Task] = set()
        self.seq = itertools.count()
        self.fatal: BaseException | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> _Task:
        task = _Task(coro)
        self.tasks.add(task)
        self.ready.append((task, None))
        return task

    def timer(self, delay: float) -> Pending:
        done = Pending()
        heapq.heappush(self.timers, (time.monotonic() + max(delay, 0.0), next(self.seq), done))
        return done

    def step(self, task: _Task, error: BaseException | None) -> None:
        if task._done:
            return
        try:
            yielded = task._coro.throw(error) if error is not None else task._coro.send(None)
        except StopIteration as stop:
            self.tasks.discard(task)
            task.set_result(stop.value)
            return
        except Exception as exc:
            self.tasks.discard(task)
            task.set_error(exc)
            return
        except BaseException as exc:  # suspension or shutdown: the whole run ends with it
            self.tasks.discard(task)
            self.fatal = exc
            return
        if type(yielded) is not Pending and not isinstance(yielded, _Task):
            wrong = TypeError("'await' needs an awaitable from the workers API or asyncio")
            self.ready.append((task, wrong))
            return
        yielded._on_done(lambda _done: self.ready.append((task, None)))

    def run(self, main: _Task) -> Any:
        while not main._done and self.fatal is None:
            while self.ready and self.fatal is None:
                task, error = self.ready.popleft()
                self.step(task, error)
            if main._done or self.fatal is not None:
                break
            self._fire_timers()
            if self.ready:
                continue
            io = _state.io
            waiting_io = io is not None and io.has_pending()
            if not self.timers and not waiting_io:
                self.ready.append((main, RuntimeError(_DEADLOCK)))
                continue
            timeout = max(self.timers[0][0] - time.monotonic(), 0.0) if self.timers else None
            if waiting_io and io is not None:
                io.wait(timeout)
            elif timeout:
                time.sleep(timeout)
            self._fire_timers()
        return main

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            heapq.heappop(self.timers)[2].set_result(None)

    def close(self) -> None:
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):  # a coroutine that resists closing
                task._coro.close()
        self.tasks.clear()


_DEADLOCK = (
    "nothing can make progress: every task awaits another task, and no binding call or sleep "
    "is in flight"
)


def block_on(awaitable: Awaitable[Any]) -> Any:
    """Drive `awaitable` to completion in this thread; return its value or raise its error.

    Re-entrant: called while a coroutine is driven (a step body that is a coroutine, run by
    `step.do` from an `async def run`), it shares the running loop, so gathered tasks keep
    moving while it waits; the caller's own task is not scheduled meanwhile.
    """
    outer = _state.loop
    loop = outer or _Loop()
    coro = awaitable if isinstance(awaitable, types.CoroutineType) else _await(awaitable)
    main = loop.spawn(coro)
    _state.loop = loop
    try:
        loop.run(main)
        if loop.fatal is not None:
            fatal, loop.fatal = loop.fatal, None
            raise fatal
        return main._outcome()
    finally:
        _state.loop = outer
        if outer is None:
            loop.close()


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _loop() -> _Loop:
    loop = _state.loop
    if loop is None:
        raise RuntimeError("asyncio functions work only inside an 'async def' handler")
    return loop


# the vetted asyncio -----------------------------------------------------------------------------


def _as_task(aw: object) -> Pending:
    if isinstance(aw, Pending):
        return aw
    if isinstance(aw, types.CoroutineType):
        return _loop().spawn(aw)
    raise TypeError(f"expected a coroutine or an awaitable result, got {type(aw).__name__}")


def sleep(delay: float, result: Any = None) -> Pending:
    """`await asyncio.sleep(seconds)`: lets other tasks and binding calls proceed."""
    if not isinstance(delay, int | float) or delay != delay:
        raise TypeError("asyncio.sleep() needs a number of seconds")
    done: Pending = map_result(_loop().timer(float(delay)), lambda _none: result)
    return done


def create_task(coro: object) -> Pending:
    """Start a coroutine now; awaiting the result waits for it."""
    if not isinstance(coro, types.CoroutineType):
        raise TypeError("create_task() needs a coroutine")
    return _loop().spawn(coro)


async def gather(*aws: object, return_exceptions: bool = False) -> list[Any]:
    """Run the awaitables concurrently; their results in order. Binding calls started here
    travel to the host together."""
    tasks = [_as_task(aw) for aw in aws]
    results: list[Any] = []
    for task in tasks:
        try:
            results.append(await task)
        except Exception as exc:
            if not return_exceptions:
                raise
            results.append(exc)
    return results


async def wait_for(aw: object, timeout: float | None) -> Any:
    """`aw`'s result, or `TimeoutError` after `timeout` seconds (the task is cancelled)."""
    task = _as_task(aw)
    if timeout is None:
        return await task
    timer = _loop().timer(float(timeout))
    either = Pending()
    task._on_done(lambda _t: either.set_result(None))
    timer._on_done(lambda _t: either.set_result(None))
    await either
    if task._done:
        return task._outcome()
    if isinstance(task, _Task):
        _loop().ready.append((task, CancelledError("cancelled by wait_for")))
    raise TimeoutError(f"wait_for: not done within {timeout} seconds")


#: What `import asyncio` gives a tenant, each with why it is safe: every function returns only
#: `Pending`s or plain results and never the loop; the error classes are plain exceptions.
ASYNCIO_MEMBERS: dict[str, object] = {
    "sleep": sleep,  # a timer on this loop; the deadline bounds it
    "gather": gather,  # awaits tenant awaitables; nothing of the loop leaks
    "wait_for": wait_for,  # cancels the tenant's own task by throwing into it
    "create_task": create_task,  # returns an opaque Pending
    "TimeoutError": TimeoutError,  # the builtin (asyncio.TimeoutError is the same class)
    "CancelledError": CancelledError,  # an Exception here, see its docstring
}


def asyncio_module() -> types.SimpleNamespace:
    """What `import asyncio` resolves to (the namespace offers it as a read-only proxy)."""
    return types.SimpleNamespace(**ASYNCIO_MEMBERS)
