"""`dynworkers dev DIR`: one worker directory served at `/` on localhost, as `wrangler dev` does.

Host side: the CLI's main thread runs a `DevDaemon` (a `Daemon`) on its event loop until SIGINT
or SIGTERM. The directory is the worker (its wrangler file, if any, declares its bindings, vars,
crons and limits; `.dev.vars` its secrets; runtime.daemon.wrangler); it is served as one tenant,
named by the wrangler file's `name` (or the directory's), at `/` whatever the path or Host.

- State (KV, workflow instances, cron ticks, compiled code) lives in `DIR/.dynworkers/` unless
  `--state-dir` says elsewhere, and survives a restart of `dev` as wrangler's `.wrangler/state`.
- Files are polled (`POLL_S`; size and modification time of every file outside hidden folders):
  a change reloads the worker. Code that does not compile leaves the last good version serving,
  and its errors are printed.
- Its log (tenant `print()` and errors, cron ticks, reloads) is printed as it happens; a line
  `ready on http://HOST:PORT` says when it listens (after the bindings it offers).
- `GET /__scheduled?cron=<expr>` (wrangler's test route, also `/cdn-cgi/handler/scheduled`) runs
  the worker's `scheduled` handler at once, as a cron trigger would.

Exit status: 0 after a signal; 2 when the directory is not a worker (one line saying why) or the
daemon cannot start (the state directory is used by another `dev`, the port is taken).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from dynworkers.engine import EngineError
from dynworkers.runtime.daemon.config import DaemonConfig
from dynworkers.runtime.daemon.deployments import TENANT_ID
from dynworkers.runtime.daemon.front import FrontDoor
from dynworkers.runtime.daemon.server import Daemon, run_loop
from dynworkers.runtime.daemon.wrangler import (
    WranglerConfig,
    WranglerError,
    config_of,
    read_worker_directory,
)
from dynworkers.runtime.errors import DynworkersError

log = logging.getLogger("dynworkers.dev")

#: seconds between two looks at the directory's files
POLL_S = 0.5
SCHEDULED_PATHS = ("/__scheduled", "/cdn-cgi/handler/scheduled")
STATE = ".dynworkers"


def add_command(commands: Any) -> None:
    dev = commands.add_parser(
        "dev", help="serve one worker directory at / on localhost, reloading on change"
    )
    dev.add_argument("directory", help="the worker: main.py, or a wrangler file naming main")
    dev.add_argument("--port", type=int, default=8787, help="default 8787; 0 picks a free one")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--state-dir", help=f"where state lives (default DIR/{STATE})")


def tenant_name(folder: Path, config: WranglerConfig | None) -> str:
    """The worker's tenant id: its wrangler `name`, else its directory's, made a DNS label."""
    for candidate in (config.name if config else "", folder.resolve().name):
        label = re.sub(r"[^a-z0-9-]+", "-", candidate.lower()).strip("-")[:63].strip("-")
        if TENANT_ID.match(label):
            return label
    return "worker"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file outside hidden folders and caches."""
    seen = {}
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") or p in ("__pycache__", "node_modules") for p in parts[:-1]):
            continue
        with contextlib.suppress(OSError):  # removed while we looked: the next poll sees it
            if path.is_file():
                stat = path.stat()
                seen[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return seen


def describe(config: WranglerConfig | None) -> list[str]:
    """What the worker's env offers, one binding a line (as wrangler dev prints it)."""
    if config is None:
        return ["env.KV (KV namespace kv)", "env.WORKFLOWS (workflows of TenantWorkflow)"]
    lines = [f"env.{name} (var)" for name in config.vars]
    lines += [f"env.{name} (secret from .dev.vars)" for name in config.secrets]
    lines += [f"env.{name} (KV namespace {ns})" for name, ns in config.kv.items()]
    lines += [
        f"env.{name} (workflow {w['name'] or '-'}, class {w['class_name']})"
        for name, w in config.workflows.items()
    ]
    lines += [f"cron {cron}" for cron in config.crons]
    if config.compatibility_date or config.compatibility_flags:
        flags = ", ".join(config.compatibility_flags) or "no flags"
        lines.append(f"compatibility {config.compatibility_date or '-'} ({flags}): recorded")
    return lines


class DevFront(FrontDoor):
    """The front door with one tenant at `/`, and wrangler's route to run `scheduled`."""

    only = ""
    daemon: Daemon | None = None

    def route(self, request: web.Request) -> tuple[str | None, str, str]:
        return self.only, request.raw_path, ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path in SCHEDULED_PATHS and self.daemon is not None:
            cron = request.query.get("cron", "* * * * *")
            await self.daemon.run_scheduled(self.only, cron, int(time.time() * 1000))
            return web.Response(text="Ran scheduled event")
        return await super().handle(request)


class DevDaemon(Daemon):
    def __init__(self, config: DaemonConfig, folder: Path, tenant: str) -> None:
        super().__init__(config)
        front = self.front
        self.front = DevFront(
            self.tenants,
            config.max_body_bytes,
            observe=front.observe,
            tenant_error=front.tenant_error,
            body_timeout=config.body_timeout,
        )
        self.front.only = tenant
        self.front.daemon = self
        self.tenants.deployments.dev = True  # .dev.vars supplies secrets here
        self.folder = folder
        self.tenant = tenant
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        version = self.tenants.deployments.current.get(self.tenant)
        config = config_of(version.modules) if version is not None else None
        for line in describe(config):
            print(f"  {line}", flush=True)
        print(f"ready on {self.urls['front']}", flush=True)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        before = snapshot(self.folder)
        while True:
            await asyncio.sleep(POLL_S)
            now = snapshot(self.folder)
            if now != before:
                changed = sorted(set(now.items()) ^ set(before.items()))
                names = sorted({Path(path).name for path, _ in changed})
                log.info("changed: %s; reloading", ", ".join(names))
                before = now
                self.request_reload()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await super().stop()


def run(args: argparse.Namespace) -> int:
    folder = Path(args.directory).resolve()
    if not folder.is_dir():
        print(f"dynworkers dev: {args.directory} is not a directory", file=sys.stderr)
        return 2
    try:
        modules = read_worker_directory(folder, dev=True)
        config = config_of(modules)
    except (WranglerError, OSError) as exc:
        print(f"dynworkers dev: {exc}", file=sys.stderr)
        return 2
    if not any(name != "__wrangler__" for name in modules):
        print(f"dynworkers dev: {folder} holds no .py modules (add main.py)", file=sys.stderr)
        return 2
    tenant = tenant_name(folder, config)
    state = Path(args.state_dir) if args.state_dir else folder / STATE
    code = state / "worker"
    code.mkdir(parents=True, exist_ok=True)
    for link in code.iterdir():  # one worker: this directory, under its current name
        if link.is_symlink():
            link.unlink()
    (code / tenant).symlink_to(folder, target_is_directory=True)
    settings = DaemonConfig(
        host=args.host,
        port=args.port,
        control_host="127.0.0.1",
        control_port=0,
        tenants=str(code),
        state_dir=str(state / "state"),
        spares=1,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("dynworkers").setLevel(logging.INFO)
    print(f"dynworkers dev: {folder} as tenant {tenant!r}, state in {state}", flush=True)
    daemon = DevDaemon(settings, folder, tenant)
    try:
        return run_loop(daemon.run())
    except (DynworkersError, EngineError, OSError) as exc:
        if daemon.serving:
            raise
        print(f"dynworkers dev: cannot start: {exc}", file=sys.stderr)
        return 2
