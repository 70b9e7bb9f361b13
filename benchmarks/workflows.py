"""Durable workflows: dynworkers' engine side by side with DBOS Transact (SQLite), in one run.

    python -m dynworkers.benchmarks.workflows [--quick] [--out FILE.json] [--count N] [--recovery N]
                                   [--waiting N]

Full: 1,000 workflows per row, recovery of 1,000, 50,000 waiting; --quick: 50, 50 and 2,000.

dynworkers: `Supervisor(spares=2, max_sandboxes=8)` + `Engine(max_running=64)` on a fresh state
directory (SQLite WAL, synchronous=FULL), one dynamic workflow; tenants run `TENANT_SRC`
(`steps` trivial `step.do`s, then an optional `step.sleep`) in their sandboxes. DBOS: the
functions of `benchmarks.dbos_baseline` (fresh spawn processes, SQLite WAL). Both sides:

a. workflows/s and per-workflow latency (p50/p99, create to durable completion), 0 and 3 steps,
   sequential and 50 in flight (50 client coroutines; DBOS: 50 client threads), after 5 warm-up
   workflows. A tenant's wake-ups run one at a time in its one sandbox, so dynworkers' 50-at-once
   rows are taken with one tenant and with five (client i uses tenant i % 5).
b. per-step overhead = (mean 3-step - mean 0-step) / 3 of the sequential rows, in us (and the
   same from the p50s, which fsync outliers on a shared disk move less, and from each row's CPU
   per workflow: host process; zygote and sandboxes). The sequential rows run again at durability
   "process" (SQLite synchronous=NORMAL: survives kill -9 of the host, not a power loss;
   `Engine(durability="process")`; DBOS: the same PRAGMA on its connections).
c. recovery: a child creates N instances (over 5 tenants) that run one step then `step.sleep`
   ~1 s (N / 250 s when longer, so that all hibernate before the first wakes; same on both
   sides), waits until all are "waiting" and is SIGKILLed. Once every wake time has passed, a
   fresh process times Supervisor + Engine start until all N are "complete" (DBOS: `DBOS()` +
   `launch()` until all are SUCCESS).
d. dynworkers only: N instances waiting at once. A fresh process creates N over 5 tenants; each
   one's first wake-up reaches `step.sleep(S)`, S = max(20 s, 1.5 x the fill time predicted
   by the 0-step 5-tenant rate of a + 5 s). Host RSS (psutil) before and once all hibernate;
   lateness of every wake-up = when the scheduler began it minus its wake_at; and the engine's
   own `stats()["due_to_running_ms"]` over those wake-ups (its window is cleared first). Rates:
   first wake-ups/s = N / fill time; due wake-ups/s = N / (end - the sleep), which is at most
   about the fill rate (timers fall due at the pace their instances hibernated). Where the time
   goes: host CPU per wake-up in each phase (`time.process_time`, every thread) and per thread
   (psutil), the sandboxes' CPU (live ones only: an evicted sandbox's CPU is lost), the load
   average, store commits, claim batches, and the pool's cold starts and evictions. The row is
   taken twice: with max_sandboxes 8, and 20 (room for every tenant's wake-up sandboxes, so the
   pool never evicts one tenant's idle sandbox for another's scale-out).

No store polling: `Probe` wraps the engine's `store.update_instance` and `store.record` (a
completion counts once its write is durable) and the scheduler's run callback (when a wake-up
begins). Hibernation is read from `engine.stats()["hibernating"]` every 10 ms and checked
against the store's counts. Children are SIGKILLed with all their descendants (by pid) on any
exit. Prints the JSON report, then a Markdown table whose last column is dynworkers / DBOS (for
wf/s above 1 favours dynworkers, for times below 1 does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from dynworkers.benchmarks import dbos_baseline as dbos
from dynworkers.benchmarks.common import children_cpu_seconds, summarize
from dynworkers.benchmarks.workflows_report import table

if TYPE_CHECKING:
    from dynworkers.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = "dynamic-workflow"
FINISHED = ("complete", "errored", "terminated")
FULL = {"count": 1000, "concurrency": 50, "recovery": 1000, "waiting": 50_000}
QUICK = {"count": 50, "concurrency": 50, "recovery": 50, "waiting": 2000}
TENANTS = 5
POLL_S = 0.01
TIMEOUT_S = 1800.0
TENANT_SRC = """
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        x = 0
        for i in range(event.payload["steps"]):
            x = step.do("add_one", lambda: x + 1)
        if event.payload.get("sleep_ms"):
            step.sleep("nap", event.payload["sleep_ms"])
        return x
"""


class Probe:
    """Sees, without store reads, when an instance finishes and when a wake-up begins."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.finished: dict[str, str] = {}
        self.target = 0
        self.enough = asyncio.Event()
        #: instance id -> ms from due to the scheduler starting its wake-up (None: not recording)
        self.lateness_ms: dict[str, float] | None = None
        self._waiters: dict[str, asyncio.Future[str]] = {}
        update, record = engine.store.update_instance, engine.store.record
        run = engine.scheduler._run

        async def update_instance(instance_id: str, **fields: Any) -> None:
            await update(instance_id, **fields)
            if fields.get("status") in FINISHED:
                self._finish(instance_id, str(fields["status"]))

        async def record_step(step: Any, instance_id: str, **fields: Any) -> None:
            await record(step, instance_id, **fields)  # a wake-up's end is written here
            if fields.get("status") in FINISHED:
                self._finish(instance_id, str(fields["status"]))

        async def timed_run(instance_id: str, due: float) -> None:
            if self.lateness_ms is not None:
                self.lateness_ms.setdefault(instance_id, (engine.clock.now() - due) * 1000)
            await run(instance_id, due)

        engine.store.update_instance = update_instance
        engine.store.record = record_step
        engine.scheduler._run = timed_run

    def _finish(self, instance_id: str, status: str) -> None:
        self.finished[instance_id] = status
        waiter = self._waiters.pop(instance_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(status)
        if self.target and len(self.finished) >= self.target:
            self.enough.set()

    def expect(self, instance_id: str) -> asyncio.Future[str]:
        future = asyncio.get_running_loop().create_future()
        self._waiters[instance_id] = future
        return future

    async def all_finished(self, count: int, timeout: float = TIMEOUT_S) -> None:
        self.target = count
        if len(self.finished) < count:
            await asyncio.wait_for(self.enough.wait(), timeout)

    async def hibernating(self, count: int, timeout: float = TIMEOUT_S) -> int:
        """Wait until `count` instances hibernate (or some already finished); return the peak."""
        deadline, peak = time.monotonic() + timeout, 0
        while peak < count and not self.finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {peak} of {count} instances hibernated")
            await asyncio.sleep(POLL_S)
            peak = max(peak, self.engine.scheduler.waiting)  # stats() sorts its windows
        return peak


@contextlib.asynccontextmanager
async def _host(
    state_dir: str, store: str | None = None, durability: str = "full", max_sandboxes: int = 8
) -> AsyncIterator[tuple[Engine, Probe]]:
    """Supervisor + Engine on `state_dir` (and `store`, default its SQLite file), the dynamic
    workflow registered, a Probe installed."""
    from dynworkers.engine import Engine, create_dynamic_workflow_entrypoint, wrap_workflow_binding
    from dynworkers.loader import WorkerCode
    from dynworkers.runtime import Supervisor, SupervisorConfig

    def code(tenant: str) -> WorkerCode:
        binding = wrap_workflow_binding({"tenant_id": tenant})
        return WorkerCode("main", {"main": TENANT_SRC}, env={"WORKFLOWS": binding})

    config = SupervisorConfig(state_dir=state_dir, spares=2, max_sandboxes=max_sandboxes)
    async with Supervisor(config) as supervisor:
        engine = Engine(supervisor, store, max_running=64, durability=durability)
        probe = Probe(engine)
        async with engine:

            async def load_runner(metadata: dict[str, Any], env: Any, ctx: Any) -> Any:
                tenant = metadata["tenant_id"]
                stub = await supervisor.loader.get(tenant, lambda: code(tenant))
                return stub.get_entrypoint("TenantWorkflow")

            engine.register(WORKFLOW, create_dynamic_workflow_entrypoint(load_runner))
            yield engine, probe


async def _create(engine: Engine, count: int, tenants: int, **params: Any) -> None:
    """Create `count` instances, 1,000 per round spread evenly over the tenants."""
    from dynworkers.engine.dispatch import envelope

    for done in range(0, count, 1000):
        n = min(1000, count - done)
        for i in range(tenants):
            item = envelope({"tenant_id": f"t{i}"}, {"steps": 0, **params})
            k = n // tenants + (i < n % tenants)
            if k:
                await engine.create(WORKFLOW, [(None, item)] * k, tenant=f"t{i}")


async def _one(engine: Engine, probe: Probe, tenant: str, steps: int) -> float:
    """Create one instance and wait until it is durably complete; return the latency in ms."""
    from dynworkers.engine.dispatch import envelope

    local = uuid.uuid4().hex
    done = probe.expect(f"{tenant}/{local}")
    t0 = time.perf_counter()
    item = envelope({"tenant_id": tenant}, {"steps": steps})
    await engine.create(WORKFLOW, [(local, item)], tenant=tenant)
    if await done != "complete":
        raise RuntimeError(f"{tenant}/{local}: {await engine.status(f'{tenant}/{local}')}")
    return (time.perf_counter() - t0) * 1000


async def throughput(
    steps: int,
    concurrency: int,
    count: int,
    tenants: int,
    store: str | None = None,
    durability: str = "full",
) -> dict[str, Any]:
    """`count` workflows of `steps` steps, `concurrency` in flight over `tenants` tenants, on
    `store` (default: SQLite in a fresh state directory, at `durability`)."""
    names = [f"t{i}" for i in range(tenants)]
    with tempfile.TemporaryDirectory(prefix="wf-bench-") as state_dir:
        async with _host(state_dir, store, durability) as (engine, probe):
            for i in range(max(5, tenants)):
                await _one(engine, probe, names[i % tenants], steps)
            latencies: list[float] = []
            indices = iter(range(count))

            async def client() -> None:
                for i in indices:
                    latencies.append(await _one(engine, probe, names[i % tenants], steps))

            commits0, cpu0 = engine.store.commits, time.process_time()
            sandboxes0 = children_cpu_seconds()
            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = time.perf_counter() - t0
            cpu, sandboxes = time.process_time() - cpu0, children_cpu_seconds() - sandboxes0
            commits = engine.store.commits - commits0
    summary = summarize(latencies)
    return {
        "steps": steps,
        "concurrency": concurrency,
        "tenants": tenants,
        "count": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "mean_ms": elapsed * 1e3 / count,
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "latency": summary,
        "store_commits": commits,
        "commits_per_workflow": commits / count,
        # CPU of the timed part: host process (all threads); zygote and sandboxes (clock ticks)
        "host_cpu_us_per_workflow": cpu * 1e6 / count,
        "sandbox_cpu_us_per_workflow": sandboxes * 1e6 / count,
        "durability": durability,
    }


def _query(state_dir: str, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(os.path.join(state_dir, "engine.db"))) as db:
        return db.execute(sql).fetchall()


def _counts(state_dir: str) -> dict[str, int]:
    return dict(_query(state_dir, "SELECT status, COUNT(*) FROM instances GROUP BY status"))


def _rss(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


async def _recovery_phase1(state_dir: str, count: int, sleep_ms: int, tenants: int) -> None:
    async with _host(state_dir) as (engine, probe):
        await _create(engine, count, tenants, steps=1, sleep_ms=sleep_ms)
        await probe.hibernating(count)
        print(json.dumps({"hibernating": engine.stats()["hibernating"]}), flush=True)
        await asyncio.sleep(TIMEOUT_S)  # the parent SIGKILLs this process


async def _recovery_phase2(state_dir: str, count: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with _host(state_dir) as (engine, probe):
        launched = time.perf_counter() - t0
        await probe.all_finished(count)
        seconds = time.perf_counter() - t0
        return {
            "seconds": seconds,
            "launch_seconds": launched,
            "stats": engine.stats(),
            "finished": len(probe.finished),
        }


def _cpu(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of `processes` (those that ended meanwhile count 0)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def _waiting(
    state_dir: str, count: int, sleep_ms: int, tenants: int, max_sandboxes: int = 8
) -> dict[str, Any]:
    me = psutil.Process()
    load_start = os.getloadavg()
    async with _host(state_dir, max_sandboxes=max_sandboxes) as (engine, probe):
        rss_before = me.memory_info().rss
        sandboxes_cpu0 = _cpu(me.children(recursive=True))
        cpu0, t0 = time.process_time(), time.perf_counter()
        await _create(engine, count, tenants, sleep_ms=sleep_ms)
        created = time.perf_counter() - t0
        peak = await probe.hibernating(count)
        fill = time.perf_counter() - t0
        cpu_fill = time.process_time() - cpu0
        sandboxes_cpu_fill = _cpu(me.children(recursive=True)) - sandboxes_cpu0
        load_fill = os.getloadavg()
        rss_hibernating = me.memory_info().rss
        at_fill = await asyncio.to_thread(_counts, state_dir)
        sandboxes = _rss(me.children(recursive=True))
        probe.lateness_ms = {}
        engine.hotpath.due_to_running_ms.clear()
        sandboxes_cpu1 = _cpu(me.children(recursive=True))
        cpu1 = time.process_time()
        await probe.all_finished(count, TIMEOUT_S + sleep_ms / 1000)
        total = time.perf_counter() - t0
        cpu_due = time.process_time() - cpu1
        sandboxes_cpu_due = _cpu(me.children(recursive=True)) - sandboxes_cpu1
        stats = engine.stats()
        hot: dict[str, float] = {}
        for row in await engine.hot_paths():
            hot[row["name"]] = hot.get(row["name"], 0.0) + row["count"]
        pool = engine.supervisor.stats() if engine.supervisor is not None else {}
        names = {t.native_id: t.name for t in threading.enumerate()}
        by_thread: dict[str, float] = {}
        for t in me.threads():
            name = names.get(t.id, "other")
            by_thread[name] = by_thread.get(name, 0.0) + t.user_time + t.system_time
            by_thread[name + " (system)"] = by_thread.get(name + " (system)", 0.0) + t.system_time
    # due phase: from the first timer due (no earlier than t0 + the sleep) to the last
    # completion; timers fall due at the pace the first wake-ups hibernated, so this rate is
    # at most about the fill rate
    due_span = total - sleep_ms / 1000
    return {
        "count": count,
        "tenants": tenants,
        "max_sandboxes": max_sandboxes,
        "sleep_s": sleep_ms / 1000,
        "create_seconds": created,
        "fill_seconds": fill,
        "first_wake_ups_per_second": count / fill,
        "due_wake_ups_per_second": count / due_span if due_span > 0 else None,
        "host_cpu_us_per_first_wake_up": cpu_fill * 1e6 / count,
        "host_cpu_us_per_due_wake_up": cpu_due * 1e6 / count,
        "sandboxes_cpu_us_per_first_wake_up": sandboxes_cpu_fill * 1e6 / count,
        "sandboxes_cpu_us_per_due_wake_up": sandboxes_cpu_due * 1e6 / count,
        "loadavg": {"start": load_start, "fill": load_fill, "end": os.getloadavg()},
        "peak_hibernating": peak,
        "all_hibernating_at_once": peak >= count,
        "status_at_fill": at_fill,
        "host_rss_before": rss_before,
        "host_rss_hibernating": rss_hibernating,
        "host_bytes_per_instance": (rss_hibernating - rss_before) / count,
        "sandboxes_rss_sum": sandboxes,
        "total_seconds": total,
        "lateness": summarize(list(probe.lateness_ms.values())),
        "engine_due_to_running_ms": stats["due_to_running_ms"],
        "hot_path_counts": hot,
        "store_commits": engine.store.commits,
        "claim_batches": {"batches": engine.claims.batches, "claims": engine.claims.claims},
        "pool": {k: v for k, v in pool.items() if isinstance(v, int | float)},
        "host_cpu_seconds_by_thread": by_thread,
    }


@contextlib.contextmanager
def _child(*args: str, timeout: float = TIMEOUT_S) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Run `python -m dynworkers.benchmarks.workflows ARGS`; yield (process, the JSON line it
    printed).
    On exit it is SIGKILLed with its descendants if still alive."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynworkers.benchmarks.workflows", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"child {args[0]} printed nothing (exit code {proc.poll()})")
        yield proc, json.loads(line)
    finally:
        _kill_tree(proc)


def _kill_tree(proc: subprocess.Popen[str], grace: float = 1.0) -> int:
    """SIGKILL a live child; return how many descendants outlived it by `grace` s (SIGKILLed)."""
    if proc.poll() is not None:
        return 0
    descendants: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        descendants = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(descendants, timeout=grace)
    survivors = []
    for process in alive:  # a zombie is dead, only waiting for init to reap it
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
                survivors.append(process)
    psutil.wait_procs(survivors, timeout=grace)
    return len(survivors)


def recovery(count: int, sleep_ms: int = 1000, tenants: int = TENANTS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wf-recovery-") as d:
        args = ("--count", str(count), "--sleep-ms", str(sleep_ms), "--tenants", str(tenants))
        with _child("--child-recovery-phase1", d, *args) as (proc, _):
            survivors = _kill_tree(proc)  # SIGKILL: no close, no flush
        at_kill = _counts(d)
        if at_kill.get("waiting", 0) != count:
            raise RuntimeError(f"expected {count} waiting instances at the kill, found {at_kill}")
        last_wake_at = _query(d, "SELECT MAX(wake_at) FROM instances")[0][0]
        time.sleep(max(0.0, last_wake_at - time.time() + 0.01))
        t0 = time.perf_counter()
        with _child("--child-recovery-phase2", d, *args) as (proc, out):
            proc.wait(60.0)
        out.update(
            process_seconds=time.perf_counter() - t0,
            count=count,
            tenants=tenants,
            sleep_s=sleep_ms / 1000,
            sandboxes_surviving_kill=survivors,
            after=_counts(d),
        )
    return out


def waiting(
    count: int, sleep_s: float, tenants: int = TENANTS, max_sandboxes: int = 8
) -> dict[str, Any]:
    """Section d in a fresh process; `max_sandboxes` above the default 8 shows what the pool's
    scale-outs cost (5 tenants x 3 sandboxes for wake-ups do not fit in 8: they evict each
    other's idle sandboxes)."""
    with tempfile.TemporaryDirectory(prefix="wf-waiting-") as d:
        args = (
            "--count",
            str(count),
            "--sleep-ms",
            str(round(sleep_s * 1000)),
            "--max-sandboxes",
            str(max_sandboxes),
        )
        with _child(
            "--child-waiting", d, *args, "--tenants", str(tenants), timeout=TIMEOUT_S + sleep_s
        ) as (proc, out):
            proc.wait(60.0)
    return out


def _section(report: dict[str, Any], key: str, run: Callable[..., Any], *args: Any) -> None:
    """`report[key] = run(*args)`, or the error it raised."""
    print(f"[workflows] {key} ...", file=sys.stderr, flush=True)
    try:
        report[key] = run(*args)
    except Exception as exc:
        report[key] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}


def run_all(n: dict[str, int]) -> dict[str, Any]:
    dyn: dict[str, Any] = {}
    ref: dict[str, Any] = {}
    c = n["concurrency"]
    for steps in (0, 3):
        for key, cc, t in [
            ("sequential", 1, 1),
            (f"{c}_at_once_1_tenant", c, 1),
            (f"{c}_at_once_{TENANTS}_tenants", c, TENANTS),
        ]:
            coroutine = throughput(steps, cc, n["count"], t)
            _section(dyn, f"{steps}_steps_{key}", asyncio.run, coroutine)
        for key, cc in [("sequential", 1), (f"{c}_at_once", c)]:
            _section(ref, f"{steps}_steps_{key}", dbos.throughput, steps, cc, n["count"])
        coroutine = throughput(steps, 1, n["count"], 1, durability="process")
        _section(dyn, f"{steps}_steps_sequential_process", asyncio.run, coroutine)
        _section(
            ref,
            f"{steps}_steps_sequential_process",
            dbos.throughput,
            steps,
            1,
            n["count"],
            None,
            "process",
        )
    for side in (dyn, ref):
        for suffix in ("", "_process"):
            wf0 = side.get(f"0_steps_sequential{suffix}", {})
            wf3 = side.get(f"3_steps_sequential{suffix}", {})
            if "mean_ms" in wf0 and "mean_ms" in wf3:
                side[f"per_step_us{suffix}"] = (wf3["mean_ms"] - wf0["mean_ms"]) * 1000 / 3
                side[f"per_step_us_from_p50{suffix}"] = (wf3["p50_ms"] - wf0["p50_ms"]) * 1000 / 3
                for part in ("host", "sandbox"):
                    key = f"{part}_cpu_us_per_workflow"
                    if key in wf3 and key in wf0:
                        side[f"per_step_{part}_cpu_us{suffix}"] = (wf3[key] - wf0[key]) / 3
    # long enough that the slower side has every instance asleep before the first one wakes
    sleep_s = max(1.0, n["recovery"] / 50)
    _section(dyn, "recovery", recovery, n["recovery"], round(sleep_s * 1000))
    _section(ref, "recovery", dbos.recovery, n["recovery"], sleep_s)
    rate = dyn.get(f"0_steps_{c}_at_once_{TENANTS}_tenants", {}).get("per_second") or 200.0
    sleep_s = max(20.0, 1.5 * n["waiting"] / rate + 5.0)
    _section(dyn, "waiting", waiting, n["waiting"], sleep_s)
    # the same with room for every tenant's wake-up sandboxes (5 x 3 + 2 spares + fetch): the
    # difference is what the pool's scale-outs cost, not the engine
    _section(dyn, "waiting_20_sandboxes", waiting, n["waiting"], sleep_s, TENANTS, 20)
    return {"dynworkers": dyn, "dbos": ref}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts, to check it works")
    parser.add_argument("--out", help="also write the JSON report to this file")
    for key in FULL:
        parser.add_argument(f"--{key}", type=int, help=f"default {FULL[key]}, quick {QUICK[key]}")
    for child in ("recovery-phase1", "recovery-phase2", "waiting"):
        parser.add_argument(f"--child-{child}", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--sleep-ms", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--tenants", type=int, default=TENANTS, help=argparse.SUPPRESS)
    parser.add_argument("--max-sandboxes", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_recovery_phase1:
        d, count = args.child_recovery_phase1, args.count
        asyncio.run(_recovery_phase1(d, count, args.sleep_ms, args.tenants))
    elif args.child_recovery_phase2:
        print(json.dumps(asyncio.run(_recovery_phase2(args.child_recovery_phase2, args.count))))
    elif args.child_waiting:
        body = _waiting(
            args.child_waiting, args.count, args.sleep_ms, args.tenants, args.max_sandboxes
        )
        print(json.dumps(asyncio.run(body)))
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run every cleanup on SIGTERM
        return run_main(args)
    return 0


def run_main(args: argparse.Namespace) -> int:
    n = {k: getattr(args, k) or v for k, v in (QUICK if args.quick else FULL).items()}
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(),
        "quick": args.quick,
        "counts": n,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }
    with contextlib.suppress(Exception):
        report["dbos_version"] = dbos._dbos_version()
    report.update(run_all(n))
    report["loadavg_end"] = os.getloadavg()
    text = json.dumps(report, indent=2, default=str)
    print(text + "\n\n" + table(report, n["concurrency"], TENANTS))
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
