"""Outcomes survive the loss of processes: random evictions between steps, and kill -9 of the
host itself.

The crash test runs the engine in a real host process (`tests/engine/host_process.py`), kills it
with SIGKILL mid-run, and starts a fresh one on the same state directory: every unfinished
instance resumes, a step whose result was recorded never runs again, and the at most one attempt
per tenant that was in flight runs again (at least once, as documented).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from dynworkers.engine.session import StepSession
from tests.engine.harness import Harness
from tests.tenants import workflows as programs

ROOT = Path(__file__).resolve().parents[2]


def test_random_evictions_between_steps_change_no_outcome(
    config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    chance = random.Random(7)
    evicted = []
    finish_step = StepSession._finish_step

    async def finish_then_maybe_evict(self: StepSession, step: Any, entry: Any) -> str:
        answer = await finish_step(self, step, entry)
        if chance.random() < 0.3:  # the fault: the sandbox dies right after a recorded step
            evicted.append(self.engine.supervisor.evict("acme@v1"))  # type: ignore[union-attr]
        return answer

    monkeypatch.setattr(StepSession, "_finish_step", finish_then_maybe_evict)

    async def main() -> None:
        # one sandbox for the tenant: evict() ends the sandbox of the step that just finished
        # (with several, it would also end the others' steps in flight, which then run again)
        async with Harness(config(max_sandboxes_per_tenant=1)) as h:
            h.deploy("acme", programs.COUNTER)
            envelope = {"__dispatcherMetadata": {"tenant_id": "acme"}}
            items = [(f"e{n}", {**envelope, "params": {"steps": 12}}) for n in range(6)]
            created = await h.engine.create(h.workflow.name, items, tenant="acme")
            for instance in created:
                assert (await h.wait_for(instance, "complete"))["output"] == sum(range(12))
            for n in range(6):
                for i in range(12):
                    assert h.kv("acme", f"ran:e{n}:{i}") == 1, (n, i)
            assert sum(evicted) >= 5
            assert h.supervisor.stats()["evictions"]["manual"] == sum(evicted)

    asyncio.run(main())


def _recorded_steps(db: Path) -> set[tuple[str, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT instance_id, position FROM steps WHERE kind='do' AND status='complete'"
        ).fetchall()
    return {(row[0], row[1]) for row in rows}


@pytest.mark.parametrize("durability", ["full", "process"])
def test_kill_9_of_the_host_mid_run_resumes_every_instance(tmp_path: Path, durability: str) -> None:
    """Both durability settings survive kill -9 of the host: "process" skips only the fsync,
    and a killed process's writes are in the operating system's cache."""
    state = tmp_path / "state"
    count, steps = 8, 15
    host = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.engine.host_process",
            "start",
            str(state),
            str(count),
            str(steps),
            durability,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None and host.stdout.readline().strip() == "created"
        db = state / "engine.db"
        deadline = time.monotonic() + 30
        while len(_recorded_steps(db)) < count * steps // 3:  # about a third of the way
            assert time.monotonic() < deadline, "the host made no progress"
            time.sleep(0.02)
        family = psutil.Process(host.pid).children(recursive=True)
        os.kill(host.pid, signal.SIGKILL)
        host.wait(timeout=10)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if host.stdout is not None:
            host.stdout.close()
    # the zygote and the sandboxes die with their host (parent-death signal)
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"processes outlived their host: {alive}"
    recorded = _recorded_steps(db)
    assert len(recorded) < count * steps  # it was killed mid-run

    resumed = subprocess.run(
        [sys.executable, "-m", "tests.engine.host_process", "resume", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert len(report["instances"]) == count
    for instance_id, status in report["instances"].items():
        assert status["status"] == "complete", (instance_id, status)
        assert status["output"] == sum(range(steps))
    ran = report["ran"]
    for n in range(count):
        for i in range(steps):
            times = ran[f"ran:i{n}:{i}"]
            if (f"acme/i{n}", 2 * i) in recorded:  # do and sleep steps alternate
                assert times == 1, f"recorded step {i} of i{n} ran again"
            else:
                assert times in (1, 2), f"step {i} of i{n} ran {times} times"
    again = sum(1 for value in ran.values() if value == 2)
    assert again <= 1  # one tenant, one sandbox: at most one attempt was in flight
