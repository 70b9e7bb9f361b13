"""The deadlines of calls in flight: one sweep for all of them, not a loop timer per call.

Host side, on the supervisor's event loop; plain Python state, no locks. Each call in flight has
a `CallControl` on its reply future. The controls register with the supervisor's `Deadlines`,
which keeps one loop timer, armed at the earliest deadline it knows of. A call that ends only
leaves the set (no timer to cancel); a new call whose deadline is later than the armed one (the
usual case: calls share one timeout) costs no timer at all. When the timer fires, the sweep
fails the reply future of every control that is due with `Expired`, and re-arms the timer at the
earliest deadline still pending. So on the warm path a call costs a set insert and a removal,
where a timer per call cost the loop's timer heap a push, a cancel and a later pop.

A deadline moved later (a workflow step's own timeout, and back) changes one number; one moved
earlier than the armed timer re-arms it. `abort` ends a call at once, with `Aborted`.

Failures: none of its own. The supervisor turns `Expired` and `Aborted` into the caller's typed
errors and evicts the sandbox (runtime.supervisor).
"""

from __future__ import annotations

import asyncio

from dynworkers.runtime import protocol


class Expired(Exception):
    """The call's deadline passed before its reply came."""


class Aborted(Exception):
    """The call's owner abandoned it (`CallControl.abort`): its sandbox must stop at once."""


class Deadlines:
    """The deadlines of every call in flight on one event loop, and the one timer they share."""

    __slots__ = ("_armed", "_timer", "live", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        #: the supervisor's loop, kept: asyncio.get_running_loop() costs a getpid() system call
        #: per call on Python 3.11
        self.loop = loop
        self.live: set[CallControl] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0.0  # loop time the timer fires at (meaningful while _timer is set)

    def track(self, control: CallControl) -> None:
        self.live.add(control)
        self.moved(control.deadline)

    def moved(self, deadline: float) -> None:
        """A deadline was set: re-arm only when it falls before the armed timer."""
        if self._timer is None:
            self._arm(deadline)
        elif deadline < self._armed:
            self._timer.cancel()
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        self._armed = when
        self._timer = self.loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        earliest = None
        for control in [c for c in self.live if c.deadline <= now]:
            control.expire()
        for control in self.live:
            if earliest is None or control.deadline < earliest:
                earliest = control.deadline
        if earliest is not None:
            self._arm(earliest)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.live.clear()


class CallControl:
    """The deadline of one call in flight. Bindings passed to the call may move it (a step's own
    timeout, say) or abort the call."""

    __slots__ = ("_deadlines", "_future", "deadline", "timeout")

    def __init__(
        self, future: asyncio.Future[protocol.Message], seconds: float, deadlines: Deadlines
    ) -> None:
        self._future = future
        self._deadlines = deadlines
        #: the seconds the caller was promised, for the error message
        self.timeout = seconds
        #: loop time at which the call expires
        self.deadline = deadlines.loop.time() + max(seconds, 0.0)
        deadlines.track(self)

    def set_deadline(self, seconds: float) -> None:
        """The call now ends `seconds` from now, killing its sandbox if it has not answered."""
        if self._future.done():
            return
        self.timeout = seconds
        deadlines = self._deadlines
        self.deadline = deadline = deadlines.loop.time() + max(seconds, 0.0)
        if self in deadlines.live:
            deadlines.moved(deadline)

    def expire(self) -> None:
        self._deadlines.live.discard(self)
        if not self._future.done():
            self._future.set_exception(Expired())

    def cancel(self) -> None:
        """The call ended: its deadline no longer matters."""
        self._deadlines.live.discard(self)

    def abort(self, why: str) -> None:
        """End the call now and kill its sandbox, whatever the tenant code is doing: the engine
        does this when the workflow instance the call runs was terminated or deleted, so that
        no later step or binding call of that run happens."""
        self._deadlines.live.discard(self)
        if not self._future.done():
            self._future.set_exception(Aborted(why))
