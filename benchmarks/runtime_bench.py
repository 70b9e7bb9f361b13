"""The dynworkers side of the dispatch benchmark: cold, warm, idle memory and churn.

Host side; every function takes a running `Supervisor` and returns plain data for the JSON file.
What each one times:

* `cold_spare`: a tenant with no sandbox while a spare is waiting. Before each sample the pool is
  back at its spare target with no boot in flight; the clock runs from the `stub.fetch` call to
  its response (the stub is loaded and compiled beforehand). The tenant is evicted afterwards so
  that the pool never reaches `max_sandboxes` and no sample pays a capacity eviction.
  With `defer_refill` (a diagnostic row, not a target) the replacement boot starts after the
  response instead of inside the timed window.
* `cold_back_to_back`: the same, without waiting for the spares to refill: after the first few
  samples each cold start races the replenishing boots or forks its own sandbox.
* `warm`: one tenant, already specialised, N sequential fetches; also requests per second.
* `idle_memory`: N tenants specialised and idle; USS and PSS of each sandbox from
  `psutil.Process(pid).memory_full_info()` (reads /proc/PID/smaps, so it needs root or the same
  uid, since sandboxes drop privileges), plus the host's RSS and the zygote's and a spare's USS.
* `churn`: many distinct tenants, each fetched once, through a pool capped at `max_sandboxes`,
  with a fixed number of fetches in flight; every fetch is cold. Reports cold dispatches per
  second, per-fetch latency, evictions by reason and a leak check afterwards: zygote children
  against pool size, then every churn tenant evicted and host fds and zygote children compared
  with the figures before the churn (about 3 host fds per live sandbox are expected). Also CPU
  per cold start, from the churn's start to the end of its drain: the host process (all its
  threads), the zygote itself (forks, reaping), and the sandboxes it reaped meanwhile (their
  whole lives: boot, warm-up, the call, exit), from the zygote's children times.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import psutil

from dynworkers.benchmarks.common import HANDLER_SRC, URL, summarize
from dynworkers.loader import WorkerCode, WorkerStub
from dynworkers.runtime import Supervisor


def _code() -> WorkerCode:
    return WorkerCode("main", {"main": HANDLER_SRC})


async def _stub(sup: Supervisor, tenant: str) -> WorkerStub:
    stub: WorkerStub = await sup.loader.get(tenant, _code)
    return stub


async def fetch_ok(stub: WorkerStub) -> None:
    response = await stub.fetch(URL)
    if response.status != 200 or response.body != b"ok":
        raise RuntimeError(f"unexpected response {response!r} {response.body!r}")


async def wait_for_spares(sup: Supervisor, timeout: float = 10.0) -> float:
    """Wait until the pool holds its target of spares and boots nothing; return seconds waited."""
    pool = sup.pool
    started = time.perf_counter()
    while len(pool.spares) < pool.target_spares or pool.booting or pool.spare_boots:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"spares did not refill within {timeout} s: {sup.stats()['pool']}")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


def _zygote_process(sup: Supervisor) -> psutil.Process | None:
    process = getattr(getattr(sup, "_zygote", None), "process", None)
    try:
        return psutil.Process(process.pid) if process is not None else None
    except psutil.Error:
        return None


async def cold_spare(
    sup: Supervisor, samples: int, defer_refill: bool = False, settle: float = 0.002
) -> dict[str, Any]:
    """Cold dispatch with a spare waiting. `defer_refill` (a diagnostic) sets the pool's spare
    target to 0 during the sample, so that taking the spare does not start the replacement boot
    inside the timed window; the target is restored and the pool replenished after it."""
    pool = sup.pool
    target = pool.target_spares
    times: list[float] = []
    refill: list[float] = []
    for i in range(samples):
        stub = await _stub(sup, f"cold{'-deferred' if defer_refill else ''}-{i}")
        refill.append(await wait_for_spares(sup) * 1e3)
        await asyncio.sleep(settle)  # let the zygote's reaping and the refill's last bytes pass
        if defer_refill:
            pool.target_spares = 0
        try:
            started = time.perf_counter()
            await fetch_ok(stub)
            times.append((time.perf_counter() - started) * 1e3)
        finally:
            pool.target_spares = target
        pool.replenish()
        sup.evict(stub.id, "manual")
    result = summarize(times)
    result["spare_refill_wait_ms"] = summarize(refill)
    result["samples_ms"] = times
    return result


async def cold_back_to_back(sup: Supervisor, samples: int) -> dict[str, Any]:
    stubs = [await _stub(sup, f"b2b-{i}") for i in range(samples)]
    await wait_for_spares(sup)
    times: list[float] = []
    before = sup.metrics.boots
    for stub in stubs:
        started = time.perf_counter()
        await fetch_ok(stub)
        times.append((time.perf_counter() - started) * 1e3)
        sup.evict(stub.id, "manual")
    result = summarize(times)
    result["boots_during"] = sup.metrics.boots - before
    result["samples_ms"] = times
    return result


async def warm(sup: Supervisor, samples: int) -> dict[str, Any]:
    stub = await _stub(sup, "warm")
    for _ in range(20):  # the first is cold; the rest warm caches on both sides
        await fetch_ok(stub)
    warm_before = sup.metrics.warm
    times: list[float] = []
    loop_started = time.perf_counter()
    for _ in range(samples):
        started = time.perf_counter()
        await fetch_ok(stub)
        times.append((time.perf_counter() - started) * 1e3)
    elapsed = time.perf_counter() - loop_started
    result = summarize(times)
    result["requests_per_s"] = samples / elapsed
    result["counted_warm"] = sup.metrics.warm - warm_before
    result["samples_ms"] = times
    sup.evict(stub.id, "manual")
    return result


def _memory(pid: int | None) -> dict[str, int] | None:
    if pid is None:
        return None
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return None
    return {"uss": info.uss, "pss": info.pss, "rss": info.rss}


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def idle_memory(sup: Supervisor, count: int, idle_for: float = 0.5) -> dict[str, Any]:
    stubs = [await _stub(sup, f"mem-{i}") for i in range(count)]
    for stub in stubs:
        await fetch_ok(stub)  # cold: specialise
        await fetch_ok(stub)  # warm: the handler's first call has run
    await wait_for_spares(sup)
    await asyncio.sleep(idle_for)
    per_sandbox = [m for m in (_memory(sup.sandbox_pid(s.id)) for s in stubs) if m is not None]
    spare = sup.pool.spares[0] if sup.pool.spares else None
    zygote = _zygote_process(sup)
    result: dict[str, Any] = {
        "n": count,
        "measured": len(per_sandbox),
        "host_rss": psutil.Process().memory_info().rss,
        "spare": _memory(spare.pid if spare is not None else None),
        "zygote": _memory(zygote.pid if zygote is not None else None),
    }
    for key in ("uss", "pss", "rss"):
        values = [m[key] for m in per_sandbox]
        result[f"{key}_median"] = _median(values) if values else None
        result[f"{key}_max"] = max(values) if values else None
    for stub in stubs:
        sup.evict(stub.id, "manual")
    return result


def _cpu(zygote: psutil.Process | None) -> dict[str, float]:
    """CPU seconds so far: host, zygote, and the zygote's reaped children."""
    host = psutil.Process().cpu_times()
    out = {"host": host.user + host.system}
    if zygote is not None:
        with contextlib.suppress(psutil.Error):
            z = zygote.cpu_times()
            out["zygote"] = z.user + z.system
            out["sandboxes"] = z.children_user + z.children_system
    return out


def _host_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


async def churn(
    sup: Supervisor, tenants: int, concurrency: int, prefix: str = "churn"
) -> dict[str, Any]:
    load_started = time.perf_counter()
    stubs = [await _stub(sup, f"{prefix}-{i}") for i in range(tenants)]
    load_s = time.perf_counter() - load_started
    await wait_for_spares(sup)
    stats_before = sup.stats()
    fds_before, rss_before = _host_fds(), psutil.Process().memory_info().rss
    times: list[float] = []
    errors: dict[str, int] = {}
    queue = iter(stubs)
    cpu_before = _cpu(_zygote_process(sup))

    async def worker() -> None:
        for stub in queue:  # a shared iterator: each stub goes to exactly one worker
            started = time.perf_counter()
            try:
                await fetch_ok(stub)
            except Exception as exc:
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
                continue
            times.append((time.perf_counter() - started) * 1e3)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    stats_after = sup.stats()
    await asyncio.sleep(0.5)  # let the zygote reap the last evictions
    await wait_for_spares(sup)
    zygote = _zygote_process(sup)
    children = len(zygote.children()) if zygote is not None else None
    pool = sup.stats()["pool"]
    fds_full = _host_fds()
    for stub in stubs:  # drain: with every churn sandbox gone, fds and children must be back
        sup.evict(stub.id, "manual")
    await asyncio.sleep(0.5)
    await wait_for_spares(sup)
    drained = sup.stats()["pool"]
    cpu_after = _cpu(zygote)
    result: dict[str, Any] = summarize(times)
    result.update(
        tenants=tenants,
        concurrency=concurrency,
        loader_get_s=load_s,
        elapsed_s=elapsed,
        cold_per_s=len(times) / elapsed,
        errors=errors,
        cold_counted=stats_after["cold"] - stats_before["cold"],
        warm_counted=stats_after["warm"] - stats_before["warm"],
        evictions={
            reason: stats_after["evictions"][reason] - stats_before["evictions"].get(reason, 0)
            for reason in stats_after["evictions"]
        },
        boots=stats_after["boots"] - stats_before["boots"],
        cpu_ms_per_cold={
            who: (cpu_after[who] - cpu_before[who]) * 1e3 / max(len(times), 1)
            for who in cpu_after
            if who in cpu_before
        },
        boot_failures=stats_after["boot_failures"] - stats_before["boot_failures"],
        spare_boot_ms=stats_after["spare_boot_ms"],
        boot_latency_ms=stats_after["boot_latency_ms"],
        after={
            "pool": pool,
            "zygote_children": children,
            "expected_children": pool["size"] + pool["spares"] + pool["booting"],
            "host_fds_before": fds_before,
            "host_fds_full": fds_full,
            "host_fds_drained": _host_fds(),
            "pool_drained": drained,
            "zygote_children_drained": len(zygote.children()) if zygote is not None else None,
            "host_rss_before": rss_before,
            "host_rss_drained": psutil.Process().memory_info().rss,
        },
    )
    return result
