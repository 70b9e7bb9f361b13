"""The deadline sweep (runtime.deadlines): one loop timer for every call in flight.

A real event loop with futures standing in for replies; no sandbox. Time is the loop's own, and
no test asserts how long anything took: each waits for an outcome, with a timeout that only
guards against a hang."""

from __future__ import annotations

import asyncio

import pytest

from dynworkers.runtime import protocol
from dynworkers.runtime.deadlines import Aborted, CallControl, Deadlines, Expired

GUARD = 10.0


def _timers(loop: asyncio.AbstractEventLoop) -> int:
    """Live timers in asyncio's own loop (its private heap; cancelled ones left out)."""
    return sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]


def test_calls_share_one_timer_and_each_expires_at_its_own_deadline() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        before = _timers(loop)
        short: asyncio.Future[protocol.Message] = loop.create_future()
        long: asyncio.Future[protocol.Message] = loop.create_future()
        done: asyncio.Future[protocol.Message] = loop.create_future()
        CallControl(long, 60.0, deadlines)
        CallControl(short, 0.05, deadlines)  # earlier than the armed timer: re-arms it
        ended = CallControl(done, 0.01, deadlines)
        ended.cancel()  # answered in time: never expires, and no timer was cancelled for it
        assert _timers(loop) == before + 1
        with pytest.raises(Expired):
            await asyncio.wait_for(short, GUARD)
        await asyncio.sleep(0.05)
        assert not long.done() and not done.done()  # only the call that was due
        assert len(deadlines.live) == 1
        assert _timers(loop) == before + 1  # re-armed for the long call
        deadlines.close()
        assert _timers(loop) == before

    asyncio.run(main())


def test_a_deadline_moved_earlier_and_later() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        later: asyncio.Future[protocol.Message] = loop.create_future()
        control = CallControl(later, 0.02, deadlines)
        control.set_deadline(60.0)  # a step's own timeout: the armed timer fires and re-arms
        await asyncio.sleep(0.1)
        assert not later.done()
        assert control.timeout == 60.0
        control.set_deadline(0.01)  # back to a short one: expires
        with pytest.raises(Expired):
            await asyncio.wait_for(later, GUARD)
        assert not deadlines.live
        deadlines.close()

    asyncio.run(main())


def test_an_aborted_call_leaves_the_next_call_its_deadline() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        first: asyncio.Future[protocol.Message] = loop.create_future()
        second: asyncio.Future[protocol.Message] = loop.create_future()
        CallControl(first, 60.0, deadlines).abort("the instance was terminated")
        with pytest.raises(Aborted, match="terminated"):
            await first
        CallControl(second, 0.02, deadlines)
        with pytest.raises(Expired):
            await asyncio.wait_for(second, GUARD)
        third: asyncio.Future[protocol.Message] = loop.create_future()
        control = CallControl(third, 60.0, deadlines)
        third.set_result(protocol.Returned(request_id=3, value=b"\xc0"))
        control.cancel()
        control.set_deadline(0.0)  # a binding moving the deadline of an answered call: no-op
        await asyncio.sleep(0.02)
        assert third.result().request_id == 3
        assert not deadlines.live
        deadlines.close()

    asyncio.run(main())
