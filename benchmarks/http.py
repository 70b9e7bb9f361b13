"""HTTP front door: warm dispatch through `dynworkers serve` beside a plain aiohttp server (the
ceiling), on loopback, in one run.

    python -m dynworkers.benchmarks.http [--quick] [--out FILE.json] [--generator auto|wrk|python]

Two servers, each a process of its own (`benchmarks.http_servers`), both aiohttp with
`access_log=None`:

- daemon: `python -m dynworkers.runtime.cli serve` on a fresh state directory,
  DYNWORKERS_LOG_LEVEL=warning and otherwise its defaults (2 spares, 64 sandboxes). Its code
  directory holds tenant `bench`
  and tenants `t0`..`t7`, each `benchmarks.common.HANDLER_SRC` (a module-level fetch returning
  "ok"). A request to /bench/ goes front door -> `Supervisor.invoke` -> ZeroMQ -> the tenant's
  warm sandbox -> back.
- ceiling: the same route ("*" on every path) with a handler doing the same work in-process, no
  sandbox: read the body, answer "ok".

The load generator (`benchmarks.loadgen`: wrk when on PATH, else raw asyncio streams in a child;
its docstring says why) keeps N keep-alive connections in a closed loop. For each concurrency
level (1 connection for latency, 8 and 32 for throughput) and each row (ceiling; daemon with one
tenant; at 8 and 32 also the daemon with requests spread over t0..t7: one tenant's calls run one
at a time in its one sandbox, eight tenants' in eight), a warm-up phase then a measured phase of
fixed duration: full 2 s + 5 s, --quick 1 s + 2 s (whole seconds: wrk takes no fractions).

Before each warm-up the run waits (up to 5 minutes) until the machine uses under 0.25 cores with
the servers idle, and a phase during which other processes used more than that is measured again
(twice at most; the discarded attempts are kept in the JSON). On a 2-core machine anything else
running moves every figure.

Each row has requests/s, p50/p90/p99 latency from every request, errors (non-200 answers and
socket errors) and CPU per request from the kernel's accounting over the phase, by thread: the
server's main thread, its ZeroMQ I/O thread and other threads; the same over its descendants (the
daemon's zygote and sandboxes); the generator; the server's share of time in the kernel; context
switches per request; and the cores used by other processes (the machine's counters are
tick-sampled, so that column is good to about 0.1 core, and reads slightly negative). For daemon
rows
the daemon's own `/metrics` gives the mean time inside the front door's handler and the mean wait
for the tenant's turn. Ratios daemon / ceiling per level; targets marked PASS or MISS: daemon
throughput >= 0.5x the ceiling's (each at its highest-throughput level, one tenant) and daemon
p50 < 1 ms at 1 connection.

Writes JSON (default benchmarks/out/http-<UTC time>.json) and prints Markdown tables. Every
process is stopped on any exit (`http_servers.stop`; SIGTERM to this process runs the cleanup).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from dynworkers.benchmarks import loadgen
from dynworkers.benchmarks.common import HANDLER_SRC, fmt_ms, git
from dynworkers.benchmarks.http_servers import DAEMON_ENV, Server, start_ceiling, start_daemon, stop

ROOT = Path(__file__).resolve().parent.parent
FULL = {"warmup_s": 2, "seconds": 5}
QUICK = {"warmup_s": 1, "seconds": 2}
LEVELS = (1, 8, 32)
TENANT = "bench"
SPREAD = [f"t{i}" for i in range(8)]
#: the most cores other processes may use during a phase (and before one, with servers idle)
QUIET_CORES = 0.25
QUIET_TIMEOUT_S = 300.0
RETRIES = 2
#: the CPU columns: Server.cpu() keys
THREADS = (
    "server.main",
    "server.zmq-io",
    "server.other",
    "children.main",
    "children.zmq-io",
    "children.other",
)


# --- measuring -----------------------------------------------------------------------------------


def _check(base: str, path: str) -> None:
    with urllib.request.urlopen(base + path, timeout=30) as answer:
        body = answer.read()
    if answer.status != 200 or body != b"ok":
        raise RuntimeError(f"GET {base}{path} answered {answer.status} {body[:200]!r}")


def _scrape(server: Server) -> dict[str, float]:
    """Sums and counts of the daemon's dispatch and warm-turn histograms."""
    if not server.control:
        return {}
    with urllib.request.urlopen(server.control + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for key, pattern in (
        ("dispatch", r'dynworkers_dispatch_seconds_(sum|count)\{code="2xx"\} (\S+)'),
        ("turn", r'dynworkers_boot_latency_seconds_(sum|count)\{start="warm"\} (\S+)'),
    ):
        for kind, value in re.findall(pattern, text):
            out[f"{key}_{kind}"] = float(value)
    return out


def _busy() -> tuple[float, float]:
    """The machine's busy and stolen CPU seconds so far."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq, getattr(t, "steal", 0.0)


def wait_quiet() -> float:
    """Seconds waited until the machine used under QUIET_CORES over half a second."""
    started = time.monotonic()
    cpus = os.cpu_count() or 1
    while time.monotonic() - started < QUIET_TIMEOUT_S:
        if psutil.cpu_percent(interval=0.5) / 100 * cpus < QUIET_CORES:
            break
    return time.monotonic() - started


def phase(
    kind: str,
    servers: dict[str, Server],
    name: str,
    paths: list[str],
    connections: int,
    seconds: float,
) -> dict[str, Any]:
    """One measured phase against servers[name], with the CPU it took by thread."""
    server = servers[name]
    metrics = _scrape(server)
    me = psutil.Process()
    busy, steal, mine = *_busy(), sum(me.cpu_times()[:2])
    cpu = {s: servers[s].cpu() for s in servers}
    result = loadgen.run(kind, server.base, paths, connections, seconds)
    cpu_after = {s: servers[s].cpu() for s in servers}
    busy_after, steal_after = _busy()
    n, wall = max(result["requests"], 1), result["seconds"]
    used = {k: cpu_after[name][k] - cpu[name][k] for k in cpu_after[name]}
    ours = sum(
        cpu_after[s][k] - cpu[s][k] for s in servers for k in ("server.total", "children.total")
    )
    ours += result["generator_cpu_s"] + sum(me.cpu_times()[:2]) - mine
    result.update(
        server_cpu_us_per_request=used["server.total"] / n * 1e6,
        descendants_cpu_us_per_request=used.get("children.total", 0.0) / n * 1e6,
        generator_cpu_us_per_request=result["generator_cpu_s"] / n * 1e6,
        cpu_us_per_request_by_thread={k: used.get(k, 0.0) / n * 1e6 for k in THREADS},
        server_kernel_share=used["server.system"] / used["server.total"]
        if used["server.total"]
        else None,
        server_switches_per_request=used.get("server.switches", 0.0) / n,
        descendants_switches_per_request=used.get("children.switches", 0.0) / n,
        server_cores=used["server.total"] / wall,
        descendants_cores=used.get("children.total", 0.0) / wall,
        other_cores=(busy_after - busy - ours) / wall,
        steal_cores=(steal_after - steal) / wall,
        loadavg_end=os.getloadavg(),
    )
    if metrics:
        later = _scrape(server)
        for key in ("dispatch", "turn"):
            count = later.get(f"{key}_count", 0.0) - metrics.get(f"{key}_count", 0.0)
            total = later.get(f"{key}_sum", 0.0) - metrics.get(f"{key}_sum", 0.0)
            result[f"{key}_mean_ms"] = total / count * 1e3 if count else None
    return result


def measure(
    kind: str,
    servers: dict[str, Server],
    name: str,
    paths: list[str],
    connections: int,
    settings: dict[str, int],
) -> dict[str, Any]:
    """Wait for quiet, warm up, measure; again while other processes took CPU meanwhile."""
    noisy: list[dict[str, Any]] = []
    while True:
        waited = wait_quiet()
        loadgen.run(kind, servers[name].base, paths, connections, settings["warmup_s"])
        result = phase(kind, servers, name, paths, connections, settings["seconds"])
        result["waited_for_quiet_s"] = waited
        if result["other_cores"] <= QUIET_CORES or len(noisy) == RETRIES:
            result["noisy_attempts"] = noisy
            return result
        noisy.append({k: result[k] for k in ("other_cores", "requests_per_s", "p50_ms")})
        print(
            f" (other load {result['other_cores']:.2f} cores: again)",
            end="",
            flush=True,
            file=sys.stderr,
        )


def rows_for(connections: int) -> list[tuple[str, str, list[str]]]:
    """(row label, server, paths) measured at this concurrency level."""
    rows = [("ceiling", "ceiling", [f"/{TENANT}/"]), ("daemon", "daemon", [f"/{TENANT}/"])]
    if connections >= len(SPREAD):
        rows.append((f"daemon, {len(SPREAD)} tenants", "daemon", [f"/{t}/" for t in SPREAD]))
    return rows


def run_all(kind: str, settings: dict[str, int], results: dict[str, Any]) -> None:
    servers: dict[str, Server] = {}
    rows: list[dict[str, Any]] = results["rows"]
    with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp:
        try:
            servers["ceiling"] = start_ceiling(Path(tmp))
            tenants = dict.fromkeys([TENANT, *SPREAD], HANDLER_SRC)
            servers["daemon"] = start_daemon(Path(tmp), tenants)
            for tenant in tenants:
                _check(servers["daemon"].base, f"/{tenant}/")
            _check(servers["ceiling"].base, f"/{TENANT}/")
            for connections in LEVELS:
                for label, name, paths in rows_for(connections):
                    row: dict[str, Any] = {
                        "row": label,
                        "server": name,
                        "connections": connections,
                        "paths": paths,
                    }
                    print(
                        f"  {label}, {connections} connection(s) ...",
                        end="",
                        flush=True,
                        file=sys.stderr,
                    )
                    try:
                        row.update(measure(kind, servers, name, paths, connections, settings))
                        print(f" {row['requests_per_s']:,.0f} req/s", file=sys.stderr)
                    except Exception as exc:
                        row["error"] = f"{type(exc).__name__}: {exc}"
                        row["traceback"] = traceback.format_exc()
                        print(f" ERROR {row['error']}", file=sys.stderr)
                    rows.append(row)
        finally:
            for name, server in servers.items():
                results["stopped"][name] = stop(server)


# --- verdicts and the report ---------------------------------------------------------------------


def _best(rows: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    measured = [r for r in rows if r["row"] == label and "requests_per_s" in r]
    return max(measured, key=lambda r: r["requests_per_s"]) if measured else None


def _at(rows: list[dict[str, Any]], label: str, connections: int) -> dict[str, Any] | None:
    for r in rows:
        if r["row"] == label and r["connections"] == connections and "requests_per_s" in r:
            return r
    return None


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level and row, throughput and p50 over the ceiling's at the same level."""
    out = []
    for connections in LEVELS:
        ceiling = _at(rows, "ceiling", connections)
        for label, _, _ in rows_for(connections)[1:]:
            row = _at(rows, label, connections)
            if row is None or ceiling is None:
                continue
            out.append(
                {
                    "row": label,
                    "connections": connections,
                    "throughput": row["requests_per_s"] / ceiling["requests_per_s"],
                    "p50": row["p50_ms"] / ceiling["p50_ms"],
                }
            )
    return out


def peaks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each row label's highest throughput, its level, and its ratio to the ceiling's peak."""
    labels = dict.fromkeys(label for c in LEVELS for label, _, _ in rows_for(c))
    ceiling = _best(rows, "ceiling")
    out: dict[str, Any] = {}
    for label in labels:
        best = _best(rows, label)
        if best is not None:
            ratio = best["requests_per_s"] / ceiling["requests_per_s"] if ceiling else None
            out[label] = {
                "requests_per_s": best["requests_per_s"],
                "connections": best["connections"],
                "over_ceiling": ratio,
            }
    return out


def evaluate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with its figure and verdict; a missing figure is a MISS."""
    ceiling, daemon, single = _best(rows, "ceiling"), _best(rows, "daemon"), _at(rows, "daemon", 1)
    ratio = daemon["requests_per_s"] / ceiling["requests_per_s"] if ceiling and daemon else None
    where = (
        f"daemon {daemon['connections']} conns / ceiling {ceiling['connections']} conns"
        if ceiling and daemon
        else ""
    )
    p50 = single["p50_ms"] if single else None
    return [
        {
            "name": "daemon / ceiling throughput",
            "value": ratio,
            "op": ">=",
            "limit": 0.5,
            "unit": "x",
            "at": where,
            "verdict": "PASS" if ratio and ratio >= 0.5 else "MISS",
        },
        {
            "name": "daemon p50, 1 connection",
            "value": p50,
            "op": "<",
            "limit": 1.0,
            "unit": "ms",
            "at": "1 conn",
            "verdict": "PASS" if p50 is not None and p50 < 1.0 else "MISS",
        },
    ]


def _us(value: Any) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0f}"


def render(results: dict[str, Any]) -> str:
    lines = [
        "| row | conns | req/s | p50 | p90 | p99 | errors | in handler | turn wait | other cores |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cpu = [
        "| CPU us per request | conns | server cores | main thread | ZeroMQ I/O | other threads "
        "| sandboxes + zygote: main | ZeroMQ I/O | other | generator | server in kernel "
        "| context switches per request: server / sandboxes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['connections']} | ERROR {r['error'][:80]} |")
            continue
        errors = r["errors"] + sum(r["socket_errors"].values())
        handler = fmt_ms(r["dispatch_mean_ms"]) if r.get("dispatch_mean_ms") else "-"
        turn = fmt_ms(r["turn_mean_ms"]) if r.get("turn_mean_ms") else "-"
        lines.append(
            f"| {r['row']} | {r['connections']} | {r['requests_per_s']:,.0f} | "
            f"{fmt_ms(r['p50_ms'])} | {fmt_ms(r['p90_ms'])} | {fmt_ms(r['p99_ms'])} | "
            f"{errors} | {handler} | {turn} | {r['other_cores']:.2f} |"
        )
        by = r["cpu_us_per_request_by_thread"]
        cells = [_us(by[k]) for k in THREADS] + [
            _us(r["generator_cpu_us_per_request"]),
            f"{r['server_kernel_share']:.0%}" if r["server_kernel_share"] is not None else "-",
            f"{r['server_switches_per_request']:.1f} / {r['descendants_switches_per_request']:.1f}",
        ]
        cpu.append(
            f"| {r['row']} | {r['connections']} | {r['server_cores']:.2f} | {' | '.join(cells)} |"
        )
    lines += ["", *cpu, "", "| daemon / ceiling | conns | throughput | p50 |", "|---|---|---|---|"]
    for q in results["ratios"]:
        lines.append(
            f"| {q['row']} | {q['connections']} | {q['throughput']:.2f}x | {q['p50']:.2f}x |"
        )
    lines += ["", "peak throughput:"]
    for label, peak in results["peaks"].items():
        ratio = peak["over_ceiling"]
        lines.append(
            f"  {label:20} {peak['requests_per_s']:>8,.0f} req/s at "
            f"{peak['connections']:>2} conns"
            + (f", {ratio:.2f}x the ceiling's peak" if ratio is not None else "")
        )
    lines += ["", "targets:"]
    for t in results["targets"]:
        value = t["value"]
        shown = "-" if value is None else (fmt_ms(value) if t["unit"] == "ms" else f"{value:.2f}x")
        limit = fmt_ms(t["limit"]) if t["unit"] == "ms" else f"{t['limit']}x"
        lines.append(
            f"  {t['verdict']:4}  {t['name']:30} {shown:>9}  (target {t['op']} {limit}; {t['at']})"
        )
    lines += [f"  WARNING {w}" for w in results["warnings"]]
    return "\n".join(lines)


def _warnings(results: dict[str, Any]) -> list[str]:
    env, out = results["environment"], []
    cpus = env["cpus"] or 1
    for key in ("loadavg_start", "loadavg_end"):
        if env[key][0] > cpus:
            out.append(f"{key} {env[key][0]:.2f} > {cpus} cpus: figures include other load")
    for r in results["rows"]:
        label = f"{r['row']} x{r['connections']}"
        if "error" in r:
            out.append(f"{label} failed: {r['error']}")
            continue
        if r["other_cores"] > QUIET_CORES:
            out.append(f"{label}: other processes used {r['other_cores']:.2f} cores meanwhile")
        if r["errors"] or any(r["socket_errors"].values()):
            out.append(
                f"{label}: {r['errors']} non-200 answers, socket errors {r['socket_errors']}"
            )
    for name, stopped in results["stopped"].items():
        if stopped["exit_code"] != 0 or stopped["survivors"]:
            out.append(
                f"{name} stopped with exit code {stopped['exit_code']} by "
                f"{stopped['stopped_by']}; survivors SIGKILLed: {stopped['survivors']}"
            )
    return out


def _environment(quick: bool, settings: dict[str, int], kind: str) -> dict[str, Any]:
    import aiohttp
    import msgspec
    import zmq

    return {
        "time_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "settings": settings,
        "levels": list(LEVELS),
        "daemon_env": DAEMON_ENV,
        "quiet_cores": QUIET_CORES,
        "generator": loadgen.version(kind),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgspec": msgspec.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "git_head": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dynworkers.benchmarks.http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short phases (seconds)")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk when on PATH)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run every cleanup on SIGTERM
    settings = QUICK if args.quick else FULL
    kind = loadgen.generator(args.generator)
    out = args.out or ROOT / "benchmarks" / "out" / (
        f"http-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json"
    )
    results: dict[str, Any] = {
        "environment": _environment(args.quick, dict(settings), kind),
        "rows": [],
        "stopped": {},
    }
    print(f"http benchmark ({'quick' if args.quick else 'full'}, {kind}):", file=sys.stderr)
    try:
        run_all(kind, settings, results)
    except Exception as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        results["traceback"] = traceback.format_exc()
        print(f"ERROR {results['error']}", file=sys.stderr)
    results["environment"]["loadavg_end"] = os.getloadavg()
    results["ratios"] = ratios(results["rows"])
    results["peaks"] = peaks(results["rows"])
    results["targets"] = evaluate(results["rows"])
    results["warnings"] = _warnings(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(render(results))
    print(f"\nwrote {out}")
    failed = "error" in results or any("error" in r for r in results["rows"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
