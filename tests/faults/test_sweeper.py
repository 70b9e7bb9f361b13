"""The sweeper outlives its faults: an OSError while measuring a sandbox (file descriptors run
out) is logged, the next round runs, and the supervisor still closes cleanly.

The fault is injected into `Pool.rss`, where it was observed; everything else is real."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from dynworkers.runtime import Supervisor, SupervisorConfig
from dynworkers.runtime.pool import Pool
from tests.runtime.support import eventually, load

SOURCE = """
def fetch(request, env, ctx):
    from workers import Response
    return Response("ok")
"""


def test_an_oserror_in_a_sweep_is_logged_and_the_sweeper_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def exhausted(pool: object, idle_ttl: float) -> None:
        calls.append(idle_ttl)
        raise OSError(24, "Too many open files")  # as /proc reads fail after fd exhaustion

    monkeypatch.setattr(Pool, "sweep", exhausted)

    async def main() -> None:
        config = SupervisorConfig(state_dir=tmp_path, spares=0, sweep_interval=0.05)
        async with Supervisor(config) as sup:
            stub = await load(sup, "t", SOURCE)
            assert (await stub.fetch("http://t/")).status == 200
            await eventually(lambda: len(calls) >= 3, 30, "three sweeps that failed")
            assert sup._sweeper is not None and not sup._sweeper.done()
            assert (await stub.fetch("http://t/")).status == 200

    with caplog.at_level(logging.ERROR, logger="dynworkers.supervisor"):
        asyncio.run(main())  # closing raises nothing
    assert any("sweep failed (OSError" in r.getMessage() for r in caplog.records)
