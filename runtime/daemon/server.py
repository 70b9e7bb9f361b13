"""The daemon: a Supervisor, an Engine, the tenant front door and the control API in one process.

Host side; `Daemon.run()` owns the event loop's lifetime in `dynworkers serve`. Start order
matters: the deployments are read before the engine recovers, so that every unfinished workflow
instance finds its tenant's code on its first wake-up after a restart.

Signals only queue a request and wake the loop (the handlers do nothing else):
- SIGTERM or SIGINT: stop accepting tenant requests, let those in flight finish within
  `drain_timeout`, end the log streams, close the engine (every instance is already durable; a
  wake-up cut short runs again after the next start) and the supervisor, exit 0.
- SIGHUP: read the config and the code directory again. Changed tenants are redeployed (a
  version that does not compile leaves the served one in place); settings that need a restart
  are reported, not applied.

When both listeners are up, `<state_dir>/daemon.json` says where they are (and the pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from dynworkers.engine import Engine, create_dynamic_workflow_entrypoint
from dynworkers.runtime.daemon.config import RELOADABLE, ConfigError, DaemonConfig
from dynworkers.runtime.daemon.control import ControlAPI
from dynworkers.runtime.daemon.front import FrontDoor
from dynworkers.runtime.daemon.logs import TenantLogs
from dynworkers.runtime.daemon.prometheus import DaemonMetrics
from dynworkers.runtime.daemon.tenants import Tenants
from dynworkers.runtime.supervisor import Supervisor, SupervisorConfig

log = logging.getLogger("dynworkers.daemon")

#: the one dynamic workflow that runs every tenant's TenantWorkflow
WORKFLOW = "tenants"


def supervisor_config(config: DaemonConfig) -> SupervisorConfig:
    return SupervisorConfig(
        state_dir=config.state_dir,
        store=config.store,
        max_sandboxes=config.max_sandboxes,
        spares=config.spares,
        idle_ttl=config.idle_ttl,
        memory_limit_mb=config.memory_limit_mb,
        deadline=config.deadline,
    )


class Daemon:
    def __init__(
        self, config: DaemonConfig, reload_config: Callable[[], DaemonConfig] | None = None
    ) -> None:
        self.config = config
        self.reload_config = reload_config
        self.supervisor = Supervisor(supervisor_config(config))
        self.engine = Engine(
            self.supervisor, store=config.store_url, max_running=config.max_running
        )
        self.tenants = Tenants(self.supervisor, self.engine, config)
        self.logs = TenantLogs()
        self.metrics = DaemonMetrics(self.supervisor, self.engine)
        self.front = FrontDoor(
            self.tenants,
            config.max_body_bytes,
            config.domain,
            observe=self.metrics.observe_dispatch,
            tenant_error=self.logs.tenant_error,
        )
        self.control = ControlAPI(self)
        self._runners: list[web.AppRunner] = []
        self._front_runner: web.AppRunner | None = None
        self._requests: asyncio.Queue[str] = asyncio.Queue()
        self.stopping = False
        self.urls: dict[str, str] = {}

    # --- starting --------------------------------------------------------------------------------

    async def start(self) -> None:
        state = Path(self.config.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.logs.install()
        await self.supervisor.start()
        self.engine.register(WORKFLOW, create_dynamic_workflow_entrypoint(self.tenants.load_runner))
        self.tenants.deployments.load()
        report = await self.tenants.reload()
        served = sorted(self.tenants.deployments.current)
        log.info("tenants: %s", ", ".join(served) if served else "none yet")
        if report["failed"]:
            log.error("tenants whose code does not compile: %s", ", ".join(report["failed"]))
        await self.engine.start()
        self.metrics.start()
        self._front_runner = await self._listen(
            self.front.app(), self.config.host, self.config.port, "front"
        )
        await self._listen(
            self.control.app(), self.config.control_host, self.config.control_port, "control"
        )
        (state / "daemon.json").write_text(json.dumps({"pid": os.getpid(), **self.urls}))
        log.info(
            "dynworkers serving tenants on %s/<tenant>/, control API on %s/_/",
            self.urls["front"],
            self.urls["control"],
        )

    async def _listen(self, app: web.Application, host: str, port: int, name: str) -> web.AppRunner:
        # shutdown_timeout: how long cleanup() waits for requests in flight (the drain bound)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.config.drain_timeout)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runners.append(runner)
        sockets = runner.addresses
        bound = sockets[0][1] if sockets else port
        self.urls[name] = f"http://{host}:{bound}"
        return runner

    # --- running ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start, serve until SIGTERM or SIGINT, stop; the exit status."""
        loop = asyncio.get_running_loop()
        for signum, request in (
            (signal.SIGTERM, "stop"),
            (signal.SIGINT, "stop"),
            (signal.SIGHUP, "reload"),
        ):
            loop.add_signal_handler(signum, self._requests.put_nowait, request)
        try:
            await self.start()
            while (request := await self._requests.get()) != "stop":
                await self.reload()
        finally:
            await self.stop()  # a second signal while stopping only queues a request nobody reads
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        return 0

    def request_stop(self) -> None:
        self._requests.put_nowait("stop")

    async def reload(self) -> None:
        if self.reload_config is not None:
            try:
                config = self.reload_config()
            except ConfigError as exc:
                log.error("reload: the config was not applied: %s", exc)
                config = self.config
            self._apply(config)
        report = await self.tenants.reload()
        log.info(
            "reloaded: deployed %s; failed %s; removed %s",
            report["deployed"] or "none",
            report["failed"] or "none",
            report["removed"] or "none",
        )

    def _apply(self, config: DaemonConfig) -> None:
        old = dataclasses.asdict(self.config)
        new = dataclasses.asdict(config)
        waiting = sorted(name for name in new if new[name] != old[name] and name not in RELOADABLE)
        if waiting:
            log.warning("reload: %s changed and take effect at the next restart", waiting)
        applied = {name: new[name] for name in RELOADABLE}
        self.config = dataclasses.replace(self.config, **applied)
        self.front.domain = self.config.domain
        logging.getLogger("dynworkers").setLevel(self.config.log_level.upper())
        for runner in self._runners:
            runner._shutdown_timeout = self.config.drain_timeout
        try:
            self.tenants.configure(self.config)
        except Exception as exc:
            log.error("reload: %s", exc)

    # --- stopping --------------------------------------------------------------------------------

    async def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        started = time.monotonic()
        in_flight = self.front.in_flight
        if self._front_runner is not None:
            # Stops listening, closes idle connections, waits for requests in flight.
            await self._front_runner.cleanup()
        if in_flight:
            log.info(
                "drained %d request(s) in flight in %.2f s", in_flight, time.monotonic() - started
            )
        await _maybe_await(self.logs.close())
        for runner in self._runners:
            if runner is not self._front_runner:
                await runner.cleanup()
        self.metrics.close()
        await self.engine.close()
        await self.supervisor.close()
        self.logs.uninstall()
        with contextlib.suppress(FileNotFoundError):
            (Path(self.config.state_dir) / "daemon.json").unlink()
        log.info("stopped")


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value
