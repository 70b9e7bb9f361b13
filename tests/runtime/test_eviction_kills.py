"""An evicted sandbox's process ends and is reaped by the zygote: the host never waits for a reply
from the sandbox it evicts (its channel is closed at once), the zygote kills it by pid and reports
the exit, with or without a fork request following (spares or none, capacity or idle)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psutil

from dynworkers.runtime import Supervisor
from tests.runtime.support import eventually, evictions, load
from tests.tenants import basic


def _zygote_children(sup: Supervisor) -> set[int]:
    process = sup._zygote.process if sup._zygote is not None else None
    assert process is not None
    return {child.pid for child in psutil.Process(process.pid).children()}


def _reaped(sup: Supervisor, pid: int) -> bool:
    """The zygote no longer has the process: killed and waited for, not a zombie."""
    return pid not in _zygote_children(sup) and not psutil.pid_exists(pid)


def test_a_capacity_eviction_kills_and_reaps_the_sandbox_with_or_without_spares(
    config: Callable[..., Any],
) -> None:
    async def main(spares: int) -> None:
        async with Supervisor(config(max_sandboxes=1, spares=spares)) as sup:
            first = await load(sup, "first", basic.CLOCK)
            second = await load(sup, "second", basic.CLOCK)
            await first.get_entrypoint().ping()
            pid = sup.sandbox_pid("first")
            assert pid is not None and pid in _zygote_children(sup)
            await second.get_entrypoint().ping()  # evicts "first" for capacity
            assert evictions(sup, "capacity") == 1
            await eventually(lambda: _reaped(sup, pid), what=f"sandbox {pid} reaped")
            assert await first.get_entrypoint().ping() == "pong"  # rehydrated

    asyncio.run(main(0))  # the eviction is followed by the fork of an on-demand boot
    asyncio.run(main(1))  # a spare was waiting


def test_an_idle_eviction_with_no_fork_to_follow_still_kills_and_reaps(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(idle_ttl=0.2, sweep_interval=0.05, spares=1)) as sup:
            stub = await load(sup, "sleepy", basic.CLOCK)
            await stub.get_entrypoint().ping()
            pid = sup.sandbox_pid("sleepy")
            assert pid is not None
            await sup.ready()  # the spare is back: no fork request is coming
            await eventually(lambda: evictions(sup, "idle") == 1, what="an idle eviction")
            await eventually(lambda: _reaped(sup, pid), what=f"sandbox {pid} reaped")

    asyncio.run(main())
