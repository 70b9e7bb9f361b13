"""The two servers of `benchmarks.http`: `dynworkers serve` and a plain aiohttp ceiling.

    python -m dynworkers.benchmarks.http_servers   (the ceiling; prints its port as one JSON line)

Runs in the benchmark's process, which starts each server as a child in a session of its own
(`start_daemon`, `start_ceiling`) and stops it (`stop`): SIGTERM, on which both exit by
themselves (the daemon must exit 0); after `STOP_TIMEOUT_S` SIGKILL to the process group; then
SIGKILL to any descendant seen before the stop that is still alive, and counted as a survivor.
A server that does not come up within `START_TIMEOUT_S` is stopped and `RuntimeError` raised.

`Server.cpu()` reads the kernel's CPU accounting of the server and of its descendants (the
daemon's zygote and sandboxes) per thread: each process's main thread, ZeroMQ's I/O threads
("ZMQbg/IO/*") and its other threads, so that a phase's CPU can be split by where it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
MARK = "CEILING-JSON "
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: settings of the daemon under test beyond its defaults
DAEMON_ENV = {"DYNWORKERS_LOG_LEVEL": "warning"}


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    base: str = ""
    control: str = ""
    descendants: list[psutil.Process] = field(default_factory=list)

    def cpu(self) -> Counter[str]:
        """CPU seconds and context switches of the server ("server.") and of its descendants
        ("children."): "total", "system" (in the kernel), by thread "main", "zmq-io" and
        "other", and "switches" (voluntary and involuntary, all threads)."""
        out: Counter[str] = Counter()
        main = psutil.Process(self.proc.pid)
        _account(out, "server.", main)
        with contextlib.suppress(psutil.Error):
            for child in main.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    _account(out, "children.", child)
        return out


def _account(out: Counter[str], prefix: str, process: psutil.Process) -> None:
    times = process.cpu_times()  # includes threads that have ended
    out[prefix + "total"] += times.user + times.system
    out[prefix + "system"] += times.system
    for thread in process.threads():
        task = Path(f"/proc/{process.pid}/task/{thread.id}")
        kind = "main" if thread.id == process.pid else "other"
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().startswith("ZMQbg/IO"):
                kind = "zmq-io"
        out[prefix + kind] += thread.user_time + thread.system_time
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name.endswith("ctxt_switches"):  # voluntary_ and nonvoluntary_
                    out[prefix + "switches"] += int(value)


def _popen(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    path = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**env, "PYTHONPATH": path},
        text=True,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )


def start_ceiling(cwd: Path) -> Server:
    server = Server(
        "ceiling",
        _popen([sys.executable, "-m", "dynworkers.benchmarks.http_servers"], cwd, dict(os.environ)),
    )
    stdout = server.proc.stdout
    assert stdout is not None
    ready, _, _ = select.select([stdout], [], [], START_TIMEOUT_S)
    line = stdout.readline() if ready else ""
    if not line.startswith(MARK):
        stop(server)
        raise RuntimeError(f"the ceiling server printed no port (exit code {server.proc.poll()})")
    server.base = f"http://127.0.0.1:{json.loads(line.removeprefix(MARK))['port']}"
    return server


def start_daemon(cwd: Path, tenants: dict[str, str]) -> Server:
    """`python -m dynworkers.runtime.cli serve` on `cwd`/state, serving `tenants`
    (id -> main.py source)."""
    code, state = cwd / "tenants", cwd / "state"
    for tenant, source in tenants.items():
        (code / tenant).mkdir(parents=True)
        (code / tenant / "main.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNWORKERS_")}
    command = [
        sys.executable,
        "-m",
        "dynworkers.runtime.cli",
        "serve",
        "--tenants",
        str(code),
        "--state-dir",
        str(state),
        "--port",
        "0",
        "--control-port",
        "0",
    ]
    # cwd: a fresh directory, so that no dynworkers.toml is read by accident
    server = Server("daemon", _popen(command, cwd, {**env, **DAEMON_ENV}))
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not (state / "daemon.json").exists():
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start (exit code {server.proc.poll()})")
            time.sleep(0.05)
        urls = json.loads((state / "daemon.json").read_text())
        server.base, server.control = urls["front"], urls["control"]
        with urllib.request.urlopen(server.control + "/healthz", timeout=10) as answer:
            if answer.status != 200:
                raise RuntimeError(f"the daemon's /healthz answered {answer.status}")
    except BaseException:
        stop(server)
        raise
    return server


def stop(server: Server) -> dict[str, Any]:
    """SIGTERM, then SIGKILL to the process group, then to any descendant still alive."""
    proc = server.proc
    with contextlib.suppress(psutil.Error):
        server.descendants = psutil.Process(proc.pid).children(recursive=True)
    how = "SIGTERM"
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        how = "SIGKILL"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group's leftovers, if any
    _, alive = psutil.wait_procs(server.descendants, timeout=2.0)
    survivors = []
    for process in alive:  # a zombie is dead, only waiting for its parent
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
                survivors.append(process.pid)
    if proc.stdout is not None:
        proc.stdout.close()
    return {"exit_code": code, "stopped_by": how, "survivors": survivors}


# --- the ceiling (this module's __main__) --------------------------------------------------------


async def serve_ceiling() -> None:
    """The front door's route ("*" on every path) answering "ok" in-process, no sandbox."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"ok")

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None)  # as the daemon's listeners
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    print(MARK + json.dumps({"port": runner.addresses[0][1]}), flush=True)
    await stopping.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve_ceiling())
