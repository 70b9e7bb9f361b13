"""Compile cost: the part of a cold start that Cloudflare's figures do not show.

Host side, one asyncio loop; used by `benchmarks.dispatch` (the "compile" section) and runnable
alone: `python -m dynworkers.benchmarks.compile_cost [--quick]`. For tenants of about 1 KB,
20 KB and 200 KB of source (`tenant_source`: the benchmark's trivial fetch plus small functions,
and a unique comment so that each sample's code was never seen), each sample is the time from
`loader.get(new tenant id)` to its first fetch answered, in four states:

* `compile`: the code was never seen (policy compile, then a cold start on a spare);
* `disk`: the compile cache holds it on disk only: a new `Supervisor` on the same state
  directory, as after a host restart (its start is not counted);
* `memory`: the same supervisor compiled it already, for another tenant id;
* `warm`: the tenant has its sandbox (one fetch).

`interference`: another tenant's warm fetch latency, back to back, alone and while 200 KB
tenants compile one after another on the same supervisor (p50, p99, max of each). The compile
runs in the loader's worker thread, so what it costs the loop is the GIL it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

from dynworkers.benchmarks.common import HANDLER_SRC, summarize

SIZES = {"1KB": 1_000, "20KB": 20_000, "200KB": 200_000}
SUPERVISOR = {"spares": 4, "max_sandboxes": 64, "idle_ttl": 3600.0}


def tenant_source(size: int, salt: str) -> str:
    """A valid tenant module of about `size` bytes whose hash `salt` makes unique."""
    parts = [f"# {salt}\n", HANDLER_SRC]
    n = 0
    while sum(map(len, parts)) < size:
        parts.append(f"def helper_{n}(x):\n    y = x + {n}\n    return [y, y * 2, 'v{n}']\n\n")
        n += 1
    return "".join(parts)


async def _cold(sup: Any, source: str) -> tuple[float, Any]:
    from dynworkers.benchmarks.runtime_bench import fetch_ok
    from dynworkers.loader import WorkerCode

    started = time.perf_counter()
    stub = await sup.loader.get(uuid.uuid4().hex, lambda: WorkerCode("main", {"main": source}))
    await fetch_ok(stub)
    return (time.perf_counter() - started) * 1e3, stub


async def _fetches(stub: Any, stop: asyncio.Event, limit: int) -> list[float]:
    from dynworkers.benchmarks.runtime_bench import fetch_ok

    times: list[float] = []
    while not stop.is_set() and len(times) < limit:
        started = time.perf_counter()
        await fetch_ok(stub)
        times.append((time.perf_counter() - started) * 1e3)
    return times


async def _interference(sup: Any, samples: int, compiles: int) -> dict[str, Any]:
    _, probe = await _cold(sup, HANDLER_SRC)
    alone = await _fetches(probe, asyncio.Event(), samples)
    stop = asyncio.Event()
    task = asyncio.ensure_future(_fetches(probe, stop, 10**9))
    compile_ms = []
    for _ in range(compiles):
        ms, stub = await _cold(sup, tenant_source(SIZES["200KB"], uuid.uuid4().hex))
        compile_ms.append(ms)
        sup.evict(stub.id, "manual")
    stop.set()
    during = await task
    return {
        "alone": summarize(alone),
        "during_200KB_compiles": summarize(during),
        "compiles": summarize(compile_ms),
    }


async def run(samples: int, warm: int = 200) -> dict[str, Any]:
    from dynworkers.benchmarks.runtime_bench import fetch_ok, wait_for_spares
    from dynworkers.runtime import Supervisor, SupervisorConfig

    out: dict[str, Any] = {"loadavg_start": os.getloadavg()}
    sources = {
        name: [tenant_source(size, uuid.uuid4().hex) for _ in range(samples)]
        for name, size in SIZES.items()
    }
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in SIZES}
    with tempfile.TemporaryDirectory(prefix="dw-compile-") as tmp:
        config = SupervisorConfig(state_dir=tmp, **SUPERVISOR)
        async with Supervisor(config) as sup:
            await wait_for_spares(sup, timeout=30)
            for name, batch in sources.items():
                for state in ("compile", "memory"):
                    times = rows[name].setdefault(state, [])
                    for source in batch:
                        await wait_for_spares(sup, timeout=30)
                        ms, stub = await _cold(sup, source)
                        times.append(ms)
                        if state == "memory":
                            warm_times = rows[name].setdefault("warm", [])
                            for _ in range(max(1, warm // samples)):
                                started = time.perf_counter()
                                await fetch_ok(stub)
                                warm_times.append((time.perf_counter() - started) * 1e3)
                        sup.evict(stub.id, "manual")
            await wait_for_spares(sup, timeout=30)
            out["interference"] = await _interference(sup, warm, max(3, samples // 2))
        async with Supervisor(config) as sup:  # a restarted host: the cache is on disk only
            for name, batch in sources.items():
                times = rows[name].setdefault("disk", [])
                for source in batch:
                    await wait_for_spares(sup, timeout=30)
                    ms, stub = await _cold(sup, source)
                    times.append(ms)
                    sup.evict(stub.id, "manual")
    out["sizes"] = {
        name: {"bytes": len(sources[name][0]), **{s: summarize(t) for s, t in states.items()}}
        for name, states in rows.items()
    }
    out["loadavg_end"] = os.getloadavg()
    return out


def render(result: dict[str, Any]) -> str:
    lines = [
        "| tenant | cold, compile p50 / p99 | cold, cache on disk | cold, cache in memory "
        "| warm | compile / memory (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["sizes"].items():
        cells = [
            f"{row[s]['p50_ms']:.2f} / {row[s]['p99_ms']:.2f} ms"
            for s in ("compile", "disk", "memory", "warm")
        ]
        ratio = row["compile"]["p50_ms"] / row["memory"]["p50_ms"]
        lines.append(f"| {name} ({row['bytes']:,} B) | {' | '.join(cells)} | {ratio:.1f}x |")
    i = result["interference"]
    lines += [
        "",
        "| another tenant's warm fetch | p50 | p99 | max |",
        "|---|---|---|---|",
    ]
    for label, key in [
        ("alone", "alone"),
        ("while 200 KB tenants compile", "during_200KB_compiles"),
    ]:
        s = i[key]
        lines.append(
            f"| {label} (n={s['n']}) | {s['p50_ms']:.3f} ms | {s['p99_ms']:.3f} ms "
            f"| {s['max_ms']:.3f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 samples per row instead of 20")
    args = parser.parse_args(argv)
    result = asyncio.run(run(5 if args.quick else 20))
    print(json.dumps(result, indent=1))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
