"""Several daemons on one PostgreSQL act as one service: real daemons, a real server.

Each daemon is its own process with its own state directory, all on one database (a fresh one
per test). Step bodies count their executions in the tenant's KV (shared through PostgreSQL), so
"a recorded step never runs again" is checked by count, against the steps the database held
when a host was killed. Waits poll for a state with a timeout that only guards against a hang.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.daemon.support import DaemonProcess, http, write_tenant

psycopg = pytest.importorskip("psycopg")

WORK = """
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


def bump(env, key):
    n = (env.KV.get(key) or 0) + 1
    env.KV.put(key, n)
    return n


class Default(WorkerEntrypoint):
    def fetch(self, request):
        if request.url.endswith("/plain"):
            return Response("no database needed")
        if "/ticks/" in request.url:
            return Response.json(self.env.KV.get("ticks:" + request.url.split("/ticks/")[1]) or 0)
        if "runs=" in request.url:
            keys = self.env.KV.list(prefix="runs:" + request.url.split("runs=")[1])
            return Response.json({key: self.env.KV.get(key) for key in keys})
        return Response.json({"hello": "one service", "hits": bump(self.env, "hits")})


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        me = event.instance_id
        if event.payload.get("spin"):
            def spin():
                n = 0
                while True:
                    n += 1
                    self.env.KV.put("ticks:" + me, n)
            step.do("spin", spin, config={"timeout": "1 hour", "retries": {"limit": 0}})
        a = step.do("a", lambda: bump(self.env, "runs:" + me + ":a"))
        if event.payload.get("nap"):
            step.sleep("nap", event.payload["nap"])
        b = step.do("b", lambda: bump(self.env, "runs:" + me + ":b"))
        if event.payload.get("wait"):
            step.wait_for_event("go", "go", timeout="1 hour")
        c = step.do("c", lambda: bump(self.env, "runs:" + me + ":c"))
        return a + b + c
"""

#: short leases, so that a lost host's instances move on within a test
CLUSTER = {"lease": 3.0, "poll_interval": 0.5, "spares": 1, "max_sandboxes": 4}


@contextlib.contextmanager
def cluster(tmp_path: Path, url: str, size: int = 3) -> Iterator[list[DaemonProcess]]:
    tenants = tmp_path / "tenants"
    write_tenant(tenants, "work", main=WORK)
    hosts = []
    try:
        for n in range(size):
            root = tmp_path / f"host{n}"
            root.mkdir()
            hosts.append(DaemonProcess(root, tenants, store=url, host_id=f"host{n}", **CLUSTER))
            hosts[-1].start()
        yield hosts
    finally:
        for host in hosts:
            if host.process is not None and host.process.poll() is None:
                host.stop()


def statuses(host: DaemonProcess, limit: int = 1000) -> dict[str, str]:
    answer = host.api("GET", f"/_/tenants/work/workflows?limit={limit}")
    if answer.status == 503:  # the store is reconnecting: typed, and asked again
        assert answer.json()["error"] == "StoreUnavailable", answer
        return {}
    assert answer.status == 200, answer
    return {i["id"]: i["status"] for i in answer.json()["instances"]}


def wait_all(host: DaemonProcess, ids: set[str], status: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = statuses(host)
        missing = {i for i in ids if seen.get(i) != status}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} instances not {status}: {sorted(missing)[:10]}")
        time.sleep(0.2)


def runs(host: DaemonProcess, prefix: str = "") -> dict[str, int]:
    answer = host.get(f"/work/?runs={prefix}")
    assert answer.status == 200, answer
    return answer.json()  # type: ignore[no-any-return]


def create(host: DaemonProcess, instance: str, **params: Any) -> None:
    answer = host.api("POST", "/_/tenants/work/workflows", {"id": instance, "params": params})
    assert answer.status == 201, answer


def test_a_tenant_answers_the_same_from_every_host_with_one_kv(
    tmp_path: Path, postgres_url: str
) -> None:
    with cluster(tmp_path, postgres_url) as hosts:
        hits = [host.get("/work/").json() for host in hosts for _ in range(2)]
        assert {h["hello"] for h in hits} == {"one service"}
        assert [h["hits"] for h in hits] == [1, 2, 3, 4, 5, 6]  # one counter, whichever host
        stats = [host.api("GET", "/_/stats").json()["cluster"] for host in hosts]
        assert [s["host"] for s in stats] == ["host0", "host1", "host2"]
        listed = {h["id"] for h in stats[0]["hosts"] if h["live"]}
        assert listed == {"host0", "host1", "host2"}


def test_instances_created_through_every_host_complete_once_and_events_reach_them_anywhere(
    tmp_path: Path, postgres_url: str
) -> None:
    with cluster(tmp_path, postgres_url) as hosts:
        plain = {f"p{n}" for n in range(300)}
        for n, instance in enumerate(sorted(plain)):
            create(hosts[n % 3], instance)
        waiting = {f"w{n}" for n in range(9)}
        for n, instance in enumerate(sorted(waiting)):
            create(hosts[n % 3], instance, wait=True)
        wait_all(hosts[0], waiting, "waiting")
        for n, instance in enumerate(sorted(waiting)):  # each event through another host
            sent = hosts[(n + 1) % 3].api(
                "POST", f"/_/tenants/work/workflows/{instance}/events", {"type": "go"}
            )
            assert sent.status in (200, 202), sent
        wait_all(hosts[1], plain | waiting, "complete")
        counted = runs(hosts[2], "p") | runs(hosts[2], "w")
        assert len(counted) == 3 * len(plain | waiting)
        assert set(counted.values()) == {1}  # no host lost: every step body ran exactly once
        wake_ups = [host.api("GET", "/_/stats").json()["workflows"]["wake_ups"] for host in hosts]
        assert all(w > 0 for w in wake_ups), wake_ups  # every host did some of the work


def test_terminate_and_pause_through_another_host_reach_the_host_that_runs_it(
    tmp_path: Path, postgres_url: str
) -> None:
    with cluster(tmp_path, postgres_url, size=2) as (runner, other):
        create(runner, "spinner", spin=True)
        deadline = time.monotonic() + 30
        while not _ticks(other, "spinner"):
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        with psycopg.connect(postgres_url) as db:
            (owner,) = db.execute("SELECT owner FROM instances WHERE id='work/spinner'").fetchone()
        if owner == "host1":  # the other host took it first: send through the first one
            runner, other = other, runner
        assert owner in ("host0", "host1")
        answer = other.api("POST", "/_/tenants/work/workflows/spinner/terminate")
        assert answer.status == 200, answer
        runner.wait_for("work", "spinner", "terminated")
        deadline = time.monotonic() + 30
        while True:  # the running host aborted the call: the ticks stop
            before = _ticks(other, "spinner")
            time.sleep(0.3)
            if _ticks(other, "spinner") == before:
                break
            assert time.monotonic() < deadline, "the step kept running after terminate"
        # pause through another host while a wake-up runs there: it ends paused
        create(runner, "napper", wait=True)
        runner.wait_for("work", "napper", "waiting")
        assert other.api("POST", "/_/tenants/work/workflows/napper/pause").status == 200
        runner.wait_for("work", "napper", "paused")
        assert other.api("POST", "/_/tenants/work/workflows/napper/resume").status == 200
        sent = other.api("POST", "/_/tenants/work/workflows/napper/events", {"type": "go"})
        assert sent.status in (200, 202), sent
        runner.wait_for("work", "napper", "complete")


def _ticks(host: DaemonProcess, instance: str) -> int:
    answer = host.get(f"/work/ticks/{instance}")
    assert answer.status == 200, answer
    return int(answer.json())


def _recorded_steps(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT instance_id, name FROM steps WHERE kind='do' AND status='complete'"
        ).fetchall()
    return {(instance.removeprefix("work/"), name) for instance, name in rows}


def test_kill_9_of_a_host_mid_run_its_instances_move_on_and_recorded_steps_never_rerun(
    tmp_path: Path, postgres_url: str
) -> None:
    with cluster(tmp_path, postgres_url) as hosts:
        victim = hosts[0]
        ids = {f"k{n}" for n in range(60)}
        for instance in sorted(ids):
            create(victim, instance, nap="1 second")  # the creating host runs it first
        deadline = time.monotonic() + 60
        while len(_recorded_steps(postgres_url)) < 30:
            assert time.monotonic() < deadline, "the victim recorded too little"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        victim.process.wait()  # type: ignore[union-attr]
        before = _recorded_steps(postgres_url)
        wait_all(hosts[1], ids, "complete")
        counted = runs(hosts[1], "k")
        for instance, name in before:
            assert counted[f"runs:{instance}:{name}"] == 1, (instance, name)
        assert len(counted) == 3 * len(ids)
        assert all(n in (1, 2) for n in counted.values())  # an attempt in flight may rerun
        taken = sum(h.api("GET", "/_/stats").json()["workflows"]["taken_over"] for h in hosts[1:])
        assert taken > 0
        # the killed host, restarted on its state directory, rejoins and takes work again
        _reap_orphans(victim)
        victim.start()
        again = {f"r{n}" for n in range(12)}
        for instance in sorted(again):
            create(victim, instance)
        wait_all(victim, again, "complete")
        assert victim.api("GET", "/_/stats").json()["workflows"]["wake_ups"] > 0


def _reap_orphans(host: DaemonProcess) -> None:
    """The sandboxes of a SIGKILLed daemon die with it (parent-death signal); wait for that."""
    deadline = time.monotonic() + 10
    import psutil

    while time.monotonic() < deadline:
        left = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(host.state_dir) in " ".join(p.info["cmdline"] or [])
        ]
        if not left:
            return
        time.sleep(0.05)


def test_losing_the_database_under_load_answers_503_and_recovers_without_a_restart(
    tmp_path: Path, private_postgres: Any
) -> None:
    url = private_postgres.create_database()
    with cluster(tmp_path, url, size=2) as hosts:
        ids = {f"d{n}" for n in range(40)}
        for n, instance in enumerate(sorted(ids)):
            create(hosts[n % 2], instance, nap="2 seconds")
        private_postgres.crash()
        try:
            answer = hosts[0].api(
                "POST", "/_/tenants/work/workflows", {"id": "during", "params": {}}
            )
            assert answer.status == 503, answer
            assert answer.json()["error"] == "StoreUnavailable"
            ready = http("GET", hosts[1].control + "/readyz")
            assert ready.status == 503, ready
            assert http("GET", hosts[1].control + "/healthz").status == 200
            plain = hosts[0].get("/work/plain")  # a fetch that needs no database still answers
            assert (plain.status, plain.body) == (200, b"no database needed")
        finally:
            private_postgres.restart()
        wait_all(hosts[0], ids, "complete", timeout=120)
        counted = runs(hosts[1], "d")
        assert len(counted) == 3 * len(ids)
        create(hosts[1], "after")
        wait_all(hosts[0], {"after"}, "complete")
