"""Closed-loop HTTP/1.1 load generators for `benchmarks.http`: wrk, or raw asyncio streams.

    python -m dynworkers.benchmarks.loadgen HOST PORT CONNECTIONS SECONDS PATH [PATH ...]

(the fallback)

Runs in the benchmark's process (`run`), which starts the generator as a child process and waits
for it: `wrk` when it is on PATH (Debian's `wrk` package), else this module's `__main__`. Each
of N keep-alive connections sends one request, reads the whole response, records the latency and
sends the next (no pipelining), for a fixed duration; with several paths each request takes the
next one in turn (wrk: per thread; here: per connection, from a different start).

Why wrk first: it is C and epoll, 15-35 us of CPU per request here (kernel included) against 45-180
us for the fallback, so on a 2-core machine it takes the least from the servers it measures. It
records every request's latency in a histogram of 1 us bins, so its percentiles come from all
samples; its Lua `done` hook prints them as one JSON line. Its "status" errors are responses with a
status above 399 (the servers under test answer 200 or an error status, never a redirect). The
fallback keeps the benchmark runnable where wrk is not installed: asyncio streams writing prepared
request bytes and parsing only the status line and Content-Length, cheaper per request than
aiohttp's client (no response object, no session bookkeeping), which on 2 cores would measure
itself more than the servers. Its samples are kept raw (perf_counter_ns) and its errors are exactly
the non-200 answers.

Fails with `LoadError` when the generator exits non-zero or prints no result.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dynworkers.benchmarks.common import summarize

ROOT = Path(__file__).resolve().parent.parent
MARK = "LOADGEN-JSON "
#: socket timeout of one request (wrk's --timeout; the fallback's read timeout)
TIMEOUT_S = 5.0

WRK_SCRIPT = """
local paths = {%(paths)s}
if #paths > 1 then
  local requests, n = {}, 0
  init = function(args)
    for i, p in ipairs(paths) do requests[i] = wrk.format("GET", p) end
    n = math.random(#paths)
  end
  request = function()
    n = n %% #requests + 1
    return requests[n]
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests": %%d, "duration_us": %%d, "errors": {"connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d}, "latency_us": {"min": %%d, "max": %%d, ' ..
    '"mean": %%.3f, "p50": %%d, "p90": %%d, "p99": %%d, "p99.9": %%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


class LoadError(RuntimeError):
    """The load generator failed or printed no result."""


def generator(preferred: str = "auto") -> str:
    """ "wrk" or "python": wrk when asked for or found on PATH."""
    if preferred == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if preferred == "wrk" and not shutil.which("wrk"):
        raise LoadError("wrk is not on PATH: apt-get install wrk, or use --generator python")
    return preferred


def version(kind: str) -> str:
    if kind != "wrk":
        return f"python {sys.version.split()[0]} asyncio streams"
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "wrk ?"
    return (out.stdout + out.stderr).splitlines()[0].split(" Copyright")[0]


def run(kind: str, base: str, paths: list[str], connections: int, seconds: float) -> dict[str, Any]:
    """One closed-loop phase against `base` (http://host:port): requests, req/s, latency
    percentiles in ms, errors, and the generator's own CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if kind == "wrk":
        result = _wrk(base, paths, connections, seconds)
    else:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        command = [
            sys.executable,
            "-m",
            "dynworkers.benchmarks.loadgen",
            host,
            port,
            str(connections),
            str(seconds),
            *paths,
        ]
        result = _child(command, seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["generator_cpu_s"] = (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime
    )
    result["connections"] = connections
    return result


def _child(command: list[str], seconds: float) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=seconds + TIMEOUT_S + 30
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise LoadError(f"{command[0]} did not finish within {exc.timeout:.0f} s") from None
    lines = [line for line in out.stdout.splitlines() if line.startswith(MARK)]
    if out.returncode != 0 or not lines:
        raise LoadError(
            f"{' '.join(command[:3])} exited {out.returncode} with no result: "
            f"{(out.stderr or out.stdout)[-500:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(MARK))
    return result


def _wrk(base: str, paths: list[str], connections: int, seconds: float) -> dict[str, Any]:
    quoted = ", ".join(json.dumps(p) for p in paths)  # a JSON string is a Lua string here
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="loadgen-") as script:
        script.write(WRK_SCRIPT % {"paths": quoted, "mark": MARK})
        script.flush()
        # One thread: one event loop drives every connection, so the generator needs at most
        # one core's share and never more threads than the servers have cores.
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            f"--timeout={round(TIMEOUT_S)}s",
            "-s",
            script.name,
            base + paths[0],
        ]
        raw = _child(command, seconds)
    lat, errors = raw["latency_us"], raw["errors"]
    seconds_run = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": seconds_run,
        "requests_per_s": raw["requests"] / seconds_run if seconds_run else 0.0,
        "p50_ms": lat["p50"] / 1e3,
        "p90_ms": lat["p90"] / 1e3,
        "p99_ms": lat["p99"] / 1e3,
        "p999_ms": lat["p99.9"] / 1e3,
        "mean_ms": lat["mean"] / 1e3,
        "min_ms": lat["min"] / 1e3,
        "max_ms": lat["max"] / 1e3,
        "errors": errors["status"],
        "socket_errors": {k: v for k, v in errors.items() if k != "status"},
        "latency_from": "wrk histogram of every request, 1 us bins",
    }


# --- the fallback generator (the child process) --------------------------------------------------


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    first: int,
    stop_ns: int,
    samples: list[int],
    counts: dict[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = first
    try:
        while time.perf_counter_ns() < stop_ns:
            request = requests[i % len(requests)]
            i += 1
            started = time.perf_counter_ns()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            samples.append(time.perf_counter_ns() - started)
            if head[9:12] != b"200":
                counts["errors"] += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        counts["socket_errors"] += 1
    finally:
        writer.close()


async def _load(host: str, port: int, connections: int, seconds: float, paths: list[str]) -> None:
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for p in paths]
    samples: list[int] = []
    counts = {"errors": 0, "socket_errors": 0}
    started = time.perf_counter_ns()
    stop_ns = started + int(seconds * 1e9)
    await asyncio.gather(
        *(
            _connection(host, port, requests, i, stop_ns, samples, counts)
            for i in range(connections)
        )
    )
    elapsed = (time.perf_counter_ns() - started) / 1e9
    summary = summarize([ns / 1e6 for ns in samples])
    summary.pop("n")
    print(
        MARK
        + json.dumps(
            {
                "requests": len(samples),
                "seconds": elapsed,
                "requests_per_s": len(samples) / elapsed,
                **summary,
                "errors": counts["errors"],
                "socket_errors": {"any": counts["socket_errors"]},
                "latency_from": "every request's sample (perf_counter_ns), nearest rank",
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, connections, seconds, *paths = args
    asyncio.run(_load(host, int(port), int(connections), float(seconds), paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
