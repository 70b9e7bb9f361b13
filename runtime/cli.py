"""The `dynworkers` command line.

Host side, in the main thread. Subcommands:

- `dynworkers serve`, `init`, `tenants`, `workflows`, `stats`, `logs`: the daemon and its
  control API (runtime.daemon.commands, which documents the exit status of each kind of failure).
- `dynworkers --version`: the installed version.
- `dynworkers demo`: boot a supervisor on the embedded defaults (state in ./.dynworkers), load a
  few tenants, and print their cold and warm dispatch latencies and the pool's stats.
- `dynworkers bench dispatch [...]`: the cold/warm dispatch benchmark (benchmarks.dispatch).

Exit status 0 on success, 1 when a tenant call failed, 2 for bad arguments (the daemon's
subcommands: see runtime.daemon.commands).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
import time

from dynworkers import __version__
from dynworkers.loader import WorkerCode
from dynworkers.runtime.daemon.commands import add_commands, run
from dynworkers.runtime.supervisor import Supervisor, SupervisorConfig

DEMO_TENANTS = {
    "counter": """
from workers import WorkerEntrypoint, Response

class Default(WorkerEntrypoint):
    def fetch(self, request):
        n = (self.env.KV.get("hits") or 0) + 1
        self.env.KV.put("hits", n)
        return Response.json({"tenant": "counter", "hits": n})
""",
    "greeter": """
from workers import Response, console

def fetch(request, env, ctx):
    console.log("greeting", request.url)
    return Response("hello from " + env.NAME)
""",
    "primes": """
from workers import WorkerEntrypoint, Response

def primes(limit):
    found = []
    for n in range(2, limit):
        if all(n % p for p in found if p * p <= n):
            found.append(n)
    return found

class Default(WorkerEntrypoint):
    def fetch(self, request):
        return Response.json({"primes_below_200": len(primes(200))})
""",
}


async def demo(state_dir: str, warm_calls: int) -> int:
    config = SupervisorConfig(state_dir=state_dir, spares=2, max_sandboxes=16)
    async with Supervisor(config) as supervisor:
        await supervisor.ready()  # the spares have booted, as on a long-running host
        kv = supervisor.kv("demo")
        print(f"{'tenant':<10} {'cold ms':>9} {'warm p50 us':>12} {'warm p99 us':>12}  response")
        for tenant, source in DEMO_TENANTS.items():
            code = WorkerCode("main", {"main": source}, env={"KV": kv, "NAME": tenant})
            stub = await supervisor.loader.get(tenant, functools.partial(_same, code))
            started = time.perf_counter()
            response = await stub.fetch(f"http://{tenant}.local/")
            cold = time.perf_counter() - started
            samples = []
            for _ in range(warm_calls):
                started = time.perf_counter()
                response = await stub.fetch(f"http://{tenant}.local/")
                samples.append(time.perf_counter() - started)
            samples.sort()
            p50 = samples[len(samples) // 2] * 1e6
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6
            print(
                f"{tenant:<10} {cold * 1e3:>9.2f} {p50:>12.0f} {p99:>12.0f}  {response.text()[:60]}"
            )
        print(json.dumps(supervisor.stats(), indent=2))
    return 0


def _same(code: WorkerCode) -> WorkerCode:
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynworkers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"dynworkers {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="load a few tenants and print dispatch latencies"
    )
    demo_parser.add_argument("--state-dir", default=".dynworkers")
    demo_parser.add_argument("--warm-calls", type=int, default=200)
    add_commands(commands)
    bench = commands.add_parser("bench", help="run a benchmark")
    bench.add_argument("name", choices=["dispatch"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command not in ("demo", "bench"):
        return run(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.command == "demo":
        return asyncio.run(demo(args.state_dir, args.warm_calls))
    from dynworkers.benchmarks import dispatch

    return int(dispatch.main(args.rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
