"""The blocking facade serves hosts that are not asyncio programs, with the same typed errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dynworkers.loader import WorkerCode
from dynworkers.runtime import BlockingSupervisor, SupervisorClosed, SupervisorConfig, TenantError

COUNTER = """
from workers import WorkerEntrypoint, Response

class Default(WorkerEntrypoint):
    def fetch(self, request):
        n = (self.env.KV.get("n") or 0) + 1
        self.env.KV.put("n", n)
        return Response.json({"n": n})

class Math(WorkerEntrypoint):
    def double(self, x):
        return x * 2

    def fail(self):
        raise ValueError("no")
"""


def test_blocking_facade_fetches_calls_and_raises_typed_errors(tmp_path: Path) -> None:
    config = SupervisorConfig(state_dir=tmp_path, spares=1, max_sandboxes=4, deadline=5)
    with BlockingSupervisor(config) as sup:
        kv = sup.kv("ns")
        worker = sup.loader.get(
            "acme", lambda: WorkerCode("main", {"main": COUNTER}, env={"KV": kv})
        )
        assert worker.fetch("http://acme/").json() == {"n": 1}
        assert worker.fetch("http://acme/").json() == {"n": 2}
        math = worker.get_entrypoint("Math")
        assert math.double(21) == 42
        with pytest.raises(TenantError, match="ValueError: no"):
            math.fail()
        assert sup.stats()["warm"] >= 2
        assert len(sup.sandbox_pids("acme")) == 1  # calls one after the other: one sandbox
        assert sup.evict("acme") and sup.sandbox_pids("acme") == []
    with pytest.raises(SupervisorClosed):
        sup.stats()


def test_blocking_facade_serves_several_threads_at_once(tmp_path: Path) -> None:
    config = SupervisorConfig(state_dir=tmp_path, spares=2, max_sandboxes=4, deadline=5)
    with BlockingSupervisor(config) as sup:
        kv = sup.kv("ns")
        results: list[int] = []

        def client(tenant: str) -> None:
            worker = sup.loader.get(
                tenant, lambda: WorkerCode("main", {"main": COUNTER}, env={"KV": kv})
            )
            for _ in range(5):
                results.append(worker.fetch("http://x/").json()["n"])

        threads = [threading.Thread(target=client, args=(f"t{i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # each tenant counted 1..5 in its own KV scope
        assert sorted(results) == sorted(list(range(1, 6)) * 3)
