"""Several hosts on one PostgreSQL, side by side with DBOS Transact on the same server, in one run.

    python -m dynworkers.benchmarks.cluster [--quick] [--out FILE.json]

Run it from the repository root: it starts tests/postgres.py's `PostgresServer` (this machine's
PostgreSQL binaries, initdb in a temporary directory, fsync on) and makes a fresh database for
every row. Full: 1,000 workflows per row, 50 in flight, 3 takeover trials, recovery of 1,000;
--quick: 40, 20, 1 and 50. Every figure shares this machine's cores with PostgreSQL, the daemons
and the client: on 2 cores they bound each other, which the report says beside the numbers.

a. 3-step workflows/s and latency (create to durable completion, p50/p99), 50 in flight over 5
   tenants (a tenant's wake-ups run one at a time in its sandbox on a host): through the control
   API of `dynworkers serve` daemons (benchmarks.cluster_hosts) on PostgreSQL with 1, 2 and 3
   daemons (client i creates through daemon i % N) and on SQLite with one; and an in-process
   `Engine(store="postgresql://...")` + Supervisor (benchmarks.workflows.throughput). Clients
   are coroutines (aiohttp); one poller reads which of the instances in flight finished every
   10 ms, and latency is the engine's own `updated` time of the completion minus the client's
   clock before its POST. 2 x N x 5 warm-up workflows first. DBOS: benchmarks.dbos_baseline on
   the same server (`system_database_url`), 50 client threads.
b. per-step overhead = (mean sequential 3-step - mean 0-step) / 3, in-process, on PostgreSQL and
   SQLite; DBOS on PostgreSQL the same way.
c. takeover: 3 daemons; 3 instances (in 3 tenants of their own) created through host0 run a step
   that awaits for an hour; the host owning most of them is SIGKILLed; the time from the kill to
   the first of its instances owned by a live host (the `owner` column, polled every 5 ms: the
   new owner claimed it and its wake-up runs the step again, at least once), and to all of them.
   Beside it: the lease setting (3 s, renewed every third of it) and how much of the dead host's
   lease was left at the kill.
d. recovery: host0 alone creates N instances (over 5 tenants) that run one step, then
   `step.sleep_until(U)`, one wake time for all, ~2 s after the fill is expected to end, plus the
   start of two more hosts. Once all N are waiting, host1 and host2 start, host0 is SIGKILLed;
   the figure is max(`updated`) - max(U, kill): the last completion after the instances fell
   due with host0 gone (percentiles of each completion too). DBOS on PostgreSQL: its recovery of
   N by a fresh process (benchmarks.dbos_baseline.recovery).

Every process started is stopped by pid on every exit path (SIGTERM runs the cleanups too).
Prints the JSON report, then a Markdown table: the figure, DBOS on PostgreSQL, their ratio (for
wf/s above 1 favours dynworkers, for times below 1 does) and the target (reported, never
asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from dynworkers.benchmarks import dbos_baseline as dbos
from dynworkers.benchmarks import workflows
from dynworkers.benchmarks.cluster_hosts import (
    SETTINGS,
    TENANTS,
    Daemon,
    Store,
    cluster,
    launch,
    start_postgres,
)
from dynworkers.benchmarks.cluster_report import table
from dynworkers.benchmarks.common import summarize

FULL = {"count": 1000, "concurrency": 50, "trials": 3, "recovery": 1000}
QUICK = {"count": 40, "concurrency": 20, "trials": 1, "recovery": 50}
NAMES = [f"t{i}" for i in range(TENANTS)]
HOLDERS = ["h0", "h1", "h2"]
POLL_S = 0.01
TIMEOUT_S = 900.0


async def _drive(
    controls: list[str], store: Store, count: int, concurrency: int, params: dict[str, Any]
) -> dict[str, Any]:
    """`count` workflows created through `controls` in turn, `concurrency` in flight."""
    pending: dict[str, tuple[float, asyncio.Future[tuple[str, float]]]] = {}
    latencies: list[float] = []
    indices = iter(range(count))

    async def poll() -> None:
        while True:
            await asyncio.sleep(POLL_S)
            for instance, status, updated in await asyncio.to_thread(store.finished, [*pending]):
                t0, done = pending.pop(instance)
                done.set_result((status, (updated - t0) * 1000))

    async def client(session: aiohttp.ClientSession) -> None:
        for i in indices:
            tenant, local = NAMES[i % TENANTS], uuid.uuid4().hex
            done = asyncio.get_running_loop().create_future()
            pending[f"{tenant}/{local}"] = (time.time(), done)
            url = f"{controls[i % len(controls)]}/_/tenants/{tenant}/workflows"
            async with session.post(url, json={"id": local, "params": params}) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"create answered {answer.status}: {await answer.text()}")
            status, latency = await asyncio.wait_for(done, TIMEOUT_S)
            if status != "complete":
                raise RuntimeError(f"{tenant}/{local} ended {status}")
            latencies.append(latency)

    poller = asyncio.create_task(poll())
    try:
        async with aiohttp.ClientSession() as session:
            t0 = time.perf_counter()
            await asyncio.gather(*(client(session) for _ in range(concurrency)))
            elapsed = time.perf_counter() - t0
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    summary = summarize(latencies)
    return {
        "count": count,
        "concurrency": concurrency,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "latency": summary,
    }


def _stats(daemon: Daemon) -> dict[str, Any]:
    """The daemon's `/_/stats` (standard library: called outside any event loop)."""
    with urllib.request.urlopen(daemon.control + "/_/stats", timeout=30) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def daemons_row(server: Any, size: int, n: dict[str, int], sqlite: bool = False) -> dict[str, Any]:
    """3-step workflows through `size` daemons on a fresh PostgreSQL database (or SQLite)."""
    url = "" if sqlite else server.create_database()
    try:
        with cluster(url, size, NAMES) as hosts:
            store = Store(url or f"sqlite:///{hosts[0].state_dir / 'engine.db'}")
            try:
                controls = [h.control for h in hosts]
                warm = 2 * size * TENANTS
                asyncio.run(_drive(controls, store, warm, warm, {"steps": 3}))
                params = {"steps": 3}
                out = asyncio.run(_drive(controls, store, n["count"], n["concurrency"], params))
                out["counts"] = store.counts()
            finally:
                store.close()
            out["wake_ups_per_host"] = {
                h.host_id: _stats(h)["workflows"].get("wake_ups") for h in hosts
            }
    finally:
        if url:
            server.drop_database(url)
    return {"daemons": size, "store": "sqlite" if sqlite else "postgresql", "warmup": warm, **out}


def in_process(server: Any, steps: int, concurrency: int, n: dict[str, int], pg: bool) -> Any:
    url = server.create_database() if pg else None
    try:
        run = workflows.throughput(steps, concurrency, n["count"], TENANTS, store=url)
        return {"store": "postgresql" if pg else "sqlite", **asyncio.run(run)}
    finally:
        if url:
            server.drop_database(url)


def _post(control: str, path: str, body: dict[str, Any]) -> int:
    data = json.dumps(body).encode()
    request = urllib.request.Request(control + path, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(every)


def takeover(server: Any) -> dict[str, Any]:
    """Kill -9 the host running held instances; time until a live host owns one, and all."""
    url = server.create_database()
    try:
        with cluster(url, 3, NAMES + HOLDERS) as hosts:
            store = Store(url)
            try:
                ids = [f"{h}/held" for h in HOLDERS]
                for tenant in HOLDERS:
                    body = {"id": "held", "params": {"hold": 3600}}
                    if _post(hosts[0].control, f"/_/tenants/{tenant}/workflows", body) != 201:
                        raise RuntimeError(f"could not create {tenant}/held")
                _until("every held instance owned", lambda: all(store.owners(ids).values()), 60)
                time.sleep(0.5)  # their wake-ups are inside the held step
                owners = store.owners(ids)
                victim_id = Counter(owners.values()).most_common(1)[0][0]
                victim = next(h for h in hosts if h.host_id == victim_id)
                mine = [i for i, o in owners.items() if o == victim_id]
                killed = victim.kill9()
                (lease_until,) = store.query("SELECT lease_until FROM hosts WHERE id=?", victim_id)[
                    0
                ]
                first = last = None
                deadline = time.monotonic() + 120
                while last is None and time.monotonic() < deadline:
                    moved = [o for o in store.owners(mine).values() if o not in (None, victim_id)]
                    now = time.time()
                    if moved and first is None:
                        first = now - killed
                    if len(moved) == len(mine):
                        last = now - killed
                    time.sleep(0.005)
                for h in hosts:  # the held steps would keep their hosts busy for an hour
                    if h is not victim:
                        for tenant in HOLDERS:
                            _post(h.control, f"/_/tenants/{tenant}/workflows/held/terminate", {})
                        break
            finally:
                store.close()
    finally:
        server.drop_database(url)
    return {
        "lease_s": SETTINGS["lease"],
        "poll_interval_s": SETTINGS["poll_interval"],
        "killed": victim_id,
        "its_instances": len(mine),
        "lease_left_at_kill_s": float(lease_until) - killed,
        "first_running_elsewhere_s": first,
        "all_running_elsewhere_s": last,
    }


def takeovers(server: Any, trials: int) -> dict[str, Any]:
    runs = [takeover(server) for _ in range(trials)]
    firsts = [r["first_running_elsewhere_s"] for r in runs if r["first_running_elsewhere_s"]]
    return {
        "trials": runs,
        "first_s": summarize([f * 1000 for f in firsts]),
        "lease_s": SETTINGS["lease"],
    }


async def _create_many(control: str, count: int, concurrency: int, params: Any) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with gate:
            url = f"{control}/_/tenants/{NAMES[i % TENANTS]}/workflows"
            async with session.post(url, json={"id": f"r{i}", "params": params}) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"create answered {answer.status}: {await answer.text()}")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, i) for i in range(count)))


def recovery(server: Any, count: int, concurrency: int, rate: float) -> dict[str, Any]:
    """N sleepers made on host0 alone; host1, host2 start; host0 killed; until all complete."""
    url = server.create_database()
    try:
        with cluster(url, 3, NAMES, start=1) as (a, b, c):
            store = Store(url)
            try:
                t0 = time.time()
                until = t0 + 2.0 + 1.5 * count / rate + 6.0  # + the start of two daemons
                params = {"steps": 1, "until": round(until * 1000)}
                asyncio.run(_create_many(a.control, count, concurrency, params))
                filled = time.time() - t0
                _until(f"{count} waiting", lambda: store.counts().get("waiting") == count, 600)
                all_waiting = time.time() - t0
                survivors_start = launch([b, c])
                killed = a.kill9()
                _until(f"{count} complete", lambda: store.counts().get("complete") == count, 600)
                due = max(until, killed)
                done = [float(u) - due for (u,) in store.query("SELECT updated FROM instances")]
                wake_ups = {h.host_id: _stats(h)["workflows"].get("wake_ups") for h in (b, c)}
            finally:
                store.close()
    finally:
        server.drop_database(url)
    return {
        "count": count,
        "seconds": max(done),
        "seconds_from_kill": max(done) + due - killed,
        "killed_before_due": killed < until,
        "sleep_s": until - t0,
        "create_seconds": filled,
        "all_waiting_seconds": all_waiting,
        "survivors_start_seconds": survivors_start,
        "completion_after_due": summarize([d * 1000 for d in done]),
        "wake_ups_of_survivors": wake_ups,
    }


def _dbos(server: Any, dbs: int, run: Callable[..., Any], *args: Any) -> Any:
    """`run(*args, *urls)` on `dbs` fresh databases, dropped afterwards."""
    urls = [server.create_database() for _ in range(dbs)]
    try:
        return run(*args, *urls)
    finally:
        for url in urls:
            server.drop_database(url)


def _section(report: dict[str, Any], key: str, run: Callable[..., Any], *args: Any) -> None:
    print(f"[cluster] {key} ...", file=sys.stderr, flush=True)
    try:
        report[key] = run(*args)
    except Exception as exc:
        report[key] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}


def run_all(server: Any, n: dict[str, int]) -> dict[str, Any]:
    c, r = n["concurrency"], dict[str, Any]()
    dyn: dict[str, Any] = {}
    ref: dict[str, Any] = {}
    for size in (1, 2, 3):
        _section(dyn, f"postgresql_{size}_daemons", daemons_row, server, size, n)
    _section(dyn, "sqlite_1_daemon", daemons_row, server, 1, n, True)
    _section(dyn, "in_process_postgresql", in_process, server, 3, c, n, True)
    for pg, name in ((True, "postgresql"), (False, "sqlite")):
        for steps in (0, 3):
            _section(r, f"{name}_{steps}", in_process, server, steps, 1, n, pg)
        if "mean_ms" in r.get(f"{name}_0", {}) and "mean_ms" in r.get(f"{name}_3", {}):
            dyn[f"per_step_us_{name}"] = (
                (r[f"{name}_3"]["mean_ms"] - r[f"{name}_0"]["mean_ms"]) * 1e3 / 3
            )
    dyn["sequential_in_process"] = r
    _section(ref, "3_steps_at_once", _dbos, server, 1, dbos.throughput, 3, c, n["count"])
    _section(ref, "per_step", _dbos, server, 2, dbos.per_step_overhead_us, n["count"])
    _section(dyn, "takeover", takeovers, server, n["trials"])
    rate = dyn["postgresql_1_daemons"].get("per_second") or 50.0
    _section(dyn, "recovery", recovery, server, n["recovery"], c, rate)
    sleep_s = max(1.0, n["recovery"] / 50)
    _section(ref, "recovery", _dbos, server, 1, dbos.recovery, n["recovery"], sleep_s)
    return {"dynworkers": dyn, "dbos_postgresql": ref}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts, to check it works")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run every cleanup on SIGTERM
    n = QUICK if args.quick else FULL
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(),
        "quick": args.quick,
        "counts": n,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "settings": SETTINGS,
    }
    with contextlib.suppress(Exception):
        report["dbos_version"] = dbos._dbos_version()
    server = start_postgres()
    try:
        report["postgresql_server"] = str(server.bin)
        report.update(run_all(server, n))
    finally:
        server.stop()
    report["loadavg_end"] = os.getloadavg()
    text = json.dumps(report, indent=2, default=str)
    print(text + "\n\n" + table(report))
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
