"""Cold and warm dispatch benchmark of dynworkers, side by side with simpler alternatives.

    python -m dynworkers.benchmarks.dispatch [--quick] [--out FILE.json]

One run, one machine, one trivial handler (`benchmarks.common.HANDLER_SRC`, a module-level
fetch returning "ok"). First, in one `Supervisor(spares=4, max_sandboxes=128, idle_ttl=3600)`
(see `benchmarks.runtime_bench` for how each figure is taken):

1. cold dispatch with a spare waiting, and back to back cold starts with no wait for spares;
2. warm dispatch of one tenant, and sequential requests per second;
3. USS and PSS of idle specialised sandboxes, and the host's RSS;
4. churn: distinct tenants, each fetched once, through 128 sandboxes, 8 fetches in flight.

Then, with the supervisor closed, the alternatives of `benchmarks.alternatives`: a spawn process
per tenant, a subprocess per request and in-process RestrictedPython (the lower bound).

Writes everything (raw samples included) to JSON (default benchmarks/out/dispatch-<UTC time>.json)
and prints a table in which every figure with a target is marked PASS or MISS. A section that
fails is recorded with its error, and its targets are MISS. `--quick` takes small sample counts
(seconds, for development); the full counts take a few minutes. Results are only as quiet as
the machine: the load average at start and end is recorded, and a warning printed when it
exceeds the number of cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dynworkers.benchmarks.common import fmt_bytes, fmt_ms, git

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20

FULL = {
    "cold": 300,
    "back_to_back": 300,
    "warm": 5000,
    "memory": 50,
    "churn": 10_000,
    "spawn": 50,
    "subprocess": 30,
    "in_process": 5000,
}
QUICK = {
    "cold": 30,
    "back_to_back": 30,
    "warm": 300,
    "memory": 10,
    "churn": 1000,
    "spawn": 10,
    "subprocess": 5,
    "in_process": 300,
}
CONCURRENCY = 8
SUPERVISOR = {"spares": 4, "max_sandboxes": 128, "idle_ttl": 3600}


def _environment(quick: bool, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "time_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "counts": counts,
        "concurrency": CONCURRENCY,
        "supervisor": SUPERVISOR,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "git_head": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
    }


async def _section(results: dict[str, Any], name: str, run: Callable[[], Awaitable[Any]]) -> None:
    started = time.perf_counter()
    print(f"  {name} ...", end="", flush=True, file=sys.stderr)
    try:
        results[name] = await run()
    except Exception as exc:
        results[name] = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        print(f" ERROR {type(exc).__name__}: {exc}", file=sys.stderr)
        return
    print(f" {time.perf_counter() - started:.1f} s", file=sys.stderr)


async def _run_dynworkers(counts: dict[str, int], results: dict[str, Any]) -> None:
    from dynworkers.benchmarks import runtime_bench as rb
    from dynworkers.runtime import Supervisor, SupervisorConfig

    with tempfile.TemporaryDirectory(prefix="dw-bench-") as tmp:
        config = SupervisorConfig(state_dir=tmp, **SUPERVISOR)
        async with Supervisor(config) as sup:
            await rb.wait_for_spares(sup, timeout=30)
            results["hardening"] = sup.stats()["hardening"]
            await _section(results, "cold_spare", lambda: rb.cold_spare(sup, counts["cold"]))
            await _section(
                results,
                "cold_spare_deferred_refill",
                lambda: rb.cold_spare(sup, counts["cold"], defer_refill=True),
            )
            await _section(
                results,
                "cold_back_to_back",
                lambda: rb.cold_back_to_back(sup, counts["back_to_back"]),
            )
            await _section(results, "warm", lambda: rb.warm(sup, counts["warm"]))
            await _section(results, "idle_memory", lambda: rb.idle_memory(sup, counts["memory"]))
            await _section(results, "churn", lambda: rb.churn(sup, counts["churn"], CONCURRENCY))
            results["supervisor_stats_end"] = sup.stats()


async def _run_alternatives(counts: dict[str, int], results: dict[str, Any]) -> None:
    from dynworkers.benchmarks import alternatives as alt

    async def blocking(fn: Callable[[int], Any], n: int) -> Any:
        return fn(n)  # synchronous on purpose: nothing else runs meanwhile

    await _section(
        results, "spawn_per_tenant", lambda: blocking(alt.spawn_per_tenant, counts["spawn"])
    )
    await _section(
        results,
        "subprocess_per_request",
        lambda: blocking(alt.subprocess_per_request, counts["subprocess"]),
    )
    await _section(results, "in_process", lambda: blocking(alt.in_process, counts["in_process"]))


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its figure and verdict; a missing figure is a MISS, never skipped."""
    spawn, cold = _get(results, "spawn_per_tenant", "p50_ms"), _get(results, "cold_spare", "p50_ms")
    ratio = spawn / cold if spawn and cold else None
    results["ratios"] = {"spawn_p50_over_cold_p50": ratio}
    rows = [
        ("cold p50 (spare waiting)", "p50", _get(results, "cold_spare", "p50_ms"), "<=", 1.0, "ms"),
        ("cold p99 (spare waiting)", "p99", _get(results, "cold_spare", "p99_ms"), "<=", 5.0, "ms"),
        ("warm p50", "p50", _get(results, "warm", "p50_ms"), "<=", 0.2, "ms"),
        (
            "idle USS median",
            "median",
            _get(results, "idle_memory", "uss_median"),
            "<=",
            3 * MiB,
            "bytes",
        ),
        ("idle USS max", "max", _get(results, "idle_memory", "uss_max"), "<=", 3 * MiB, "bytes"),
        ("churn cold/s", "rate", _get(results, "churn", "cold_per_s"), ">=", 500.0, "1/s"),
        ("spawn p50 / cold p50", "ratio", ratio, ">=", 30.0, "x"),
    ]
    targets = []
    for name, short, value, op, limit, unit in rows:
        ok = (
            value is not None
            and not math.isnan(value)
            and (value <= limit if op == "<=" else value >= limit)
        )
        targets.append(
            {
                "name": name,
                "short": short,
                "value": value,
                "op": op,
                "limit": limit,
                "unit": unit,
                "verdict": "PASS" if ok else "MISS",
            }
        )
    return targets


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return fmt_ms(value)
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "x":
        return f"{value:.1f}x"
    return f"{value:.0f}/s"


def _verdicts(targets: list[dict[str, Any]], *names: str) -> str:
    by_name = {t["name"]: t for t in targets}
    parts = [f"{by_name[n]['short']} {by_name[n]['verdict']}" for n in names]
    return ", ".join(parts)


def render(results: dict[str, Any], targets: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = []

    def latency(label: str, data: Any, extra: str = "", verdict: str = "") -> None:
        if not isinstance(data, dict) or "error" in data:
            error = data.get("error", "not run") if isinstance(data, dict) else "not run"
            rows.append((label, "-", "-", "-", "-", f"ERROR {error}"[:60], verdict))
            return
        rows.append(
            (
                label,
                str(data["n"]),
                fmt_ms(data["p50_ms"]),
                fmt_ms(data["p90_ms"]),
                fmt_ms(data["p99_ms"]),
                extra,
                verdict,
            )
        )

    cold, b2b, warm = (
        results.get("cold_spare"),
        results.get("cold_back_to_back"),
        results.get("warm"),
    )
    latency(
        "dynworkers cold, spare waiting",
        cold,
        "",
        _verdicts(targets, "cold p50 (spare waiting)", "cold p99 (spare waiting)"),
    )
    latency("  diagnostic: refill deferred", results.get("cold_spare_deferred_refill"))
    latency(
        "dynworkers cold, back to back",
        b2b,
        f"{b2b.get('boots_during', '?')} boots" if isinstance(b2b, dict) else "",
    )
    rps = warm.get("requests_per_s") if isinstance(warm, dict) else None
    latency(
        "dynworkers warm", warm, f"{rps:.0f} req/s" if rps else "", _verdicts(targets, "warm p50")
    )
    churn = results.get("churn")
    if isinstance(churn, dict) and "error" not in churn:
        evictions = {k: v for k, v in churn["evictions"].items() if v}
        extra = f"{churn['cold_per_s']:.0f} cold/s, evict {evictions or 'none'}"
        cpu = churn.get("cpu_ms_per_cold") or {}
        if cpu:
            extra += ", CPU ms/cold " + " ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        if churn["errors"]:
            extra += f", ERRORS {churn['errors']}"
    else:
        extra = ""
    latency(
        f"churn {_get(results, 'churn', 'tenants')} tenants x{CONCURRENCY}",
        churn,
        extra,
        _verdicts(targets, "churn cold/s"),
    )
    latency(
        "alt: spawn process per tenant",
        results.get("spawn_per_tenant"),
        f"{_fmt(results['ratios']['spawn_p50_over_cold_p50'], 'x')} cold p50",
        _verdicts(targets, "spawn p50 / cold p50"),
    )
    latency("alt: subprocess per request", results.get("subprocess_per_request"))
    in_proc = results.get("in_process") or {}
    if "error" in in_proc:
        latency("alt: in-process RestrictedPython", in_proc)
    else:
        latency("alt: in-process RP, fresh globals", in_proc.get("fresh_globals"))
        latency("alt: in-process RP, preloaded", in_proc.get("preloaded"))

    header = ("measurement", "n", "p50", "p90", "p99", "other", "targets")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))

    memory = results.get("idle_memory")
    lines.append("")
    if isinstance(memory, dict) and "error" not in memory:
        lines.append(
            f"idle memory, {memory['measured']}/{memory['n']} sandboxes: "
            f"USS median {fmt_bytes(memory['uss_median'])} max {fmt_bytes(memory['uss_max'])}; "
            f"PSS median {fmt_bytes(memory['pss_median'])} max {fmt_bytes(memory['pss_max'])}; "
            f"host RSS {fmt_bytes(memory['host_rss'])}"
        )
        for who in ("spare", "zygote"):
            m = memory.get(who)
            if m:
                lines.append(
                    f"  {who}: USS {fmt_bytes(m['uss'])} PSS {fmt_bytes(m['pss'])} "
                    f"RSS {fmt_bytes(m['rss'])}"
                )
    else:
        lines.append(f"idle memory: ERROR {memory.get('error') if memory else 'not run'}")

    lines += ["", "targets:"]
    for t in targets:
        lines.append(
            f"  {t['verdict']:4}  {t['name']:26} {_fmt(t['value'], t['unit']):>12}  "
            f"(target {t['op']} {_fmt(t['limit'], t['unit'])})"
        )
    lines += [f"  WARNING {w}" for w in results.get("warnings", [])]
    return "\n".join(lines)


def _warnings(results: dict[str, Any]) -> list[str]:
    env = results["environment"]
    out = []
    cpus = env["cpus"] or 1
    for key in ("loadavg_start", "loadavg_end"):
        if env[key][0] > cpus:
            out.append(f"{key} {env[key][0]:.2f} > {cpus} cpus: figures include other load")
    after = _get(results, "churn", "after")
    if after:
        if (
            after["zygote_children"] is not None
            and after["zygote_children"] != after["expected_children"]
        ):
            out.append(
                f"after churn the zygote has {after['zygote_children']} children, "
                f"the pool accounts for {after['expected_children']}"
            )
        if after["host_fds_drained"] > after["host_fds_before"] + 4:
            out.append(
                f"host fds not released after churn and drain: {after['host_fds_before']} "
                f"-> {after['host_fds_drained']}"
            )
        drained = after["pool_drained"]
        expected = drained["size"] + drained["spares"] + drained["booting"]
        if after["zygote_children_drained"] not in (None, expected):
            out.append(
                f"after draining, the zygote has {after['zygote_children_drained']} "
                f"children, the pool accounts for {expected}"
            )
    if _get(results, "churn", "errors"):
        out.append(f"churn errors: {results['churn']['errors']}")
    for name, data in results.items():
        if isinstance(data, dict) and "error" in data:
            out.append(f"section {name} failed: {data['error']}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dynworkers.benchmarks.dispatch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sample counts (seconds)")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    out = args.out or ROOT / "benchmarks" / "out" / (
        f"dispatch-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json"
    )
    results: dict[str, Any] = {"environment": _environment(args.quick, dict(counts))}
    print(f"dispatch benchmark ({'quick' if args.quick else 'full'}):", file=sys.stderr)
    asyncio.run(_run_dynworkers(counts, results))
    asyncio.run(_run_alternatives(counts, results))
    results["environment"]["loadavg_end"] = os.getloadavg()
    results["targets"] = evaluate(results)
    results["warnings"] = _warnings(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(render(results, results["targets"]))
    print(f"\nwrote {out}")
    failed = any(isinstance(v, dict) and "error" in v for v in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
