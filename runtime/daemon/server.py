"""The daemon: a Supervisor, an Engine, the tenant front door and the control API in one process.

Host side; `Daemon.run()` owns the event loop's lifetime in `dynworkers serve`. Start order
matters: the deployments are read before the engine recovers, so that every unfinished workflow
instance finds its tenant's code on its first wake-up after a restart. With a PostgreSQL store the
deployments are the store's (runtime.daemon.shared_deployments): read and compiled at start, then
followed through the store's notices.

Signals only queue a request and wake the loop (the handlers do nothing else):
- SIGTERM or SIGINT: stop accepting tenant requests, let those in flight finish within
  `drain_timeout` (one bound for the whole drain), answer 503 to any still running then, end the
  log streams, close the control API, the engine (every instance is already durable; a wake-up
  cut short runs again after the next start) and the supervisor, exit 0. A second SIGTERM or
  SIGINT while draining ends the drain at once.
- SIGHUP: read the config and the code directory again. Changed tenants are redeployed (a
  version that does not compile leaves the served one in place); settings that need a restart
  are reported, not applied.

The state directory has one owner (the supervisor's lock, see runtime.state_dir): a second
daemon on it refuses to start, naming the first one's pid. When both listeners are up,
`<state_dir>/daemon.json` says where they are (and the pid); it is written atomically and removed
only by the daemon whose pid it holds.
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
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from dynworkers.engine import Engine, create_dynamic_workflow_entrypoint
from dynworkers.runtime.daemon.config import RELOADABLE, ConfigError, DaemonConfig
from dynworkers.runtime.daemon.connections import (
    FD_RESERVE,
    ConnectionGuard,
    GuardedSite,
    quiet_server_log,
    raise_fd_limit,
)
from dynworkers.runtime.daemon.control import ControlAPI
from dynworkers.runtime.daemon.cron_store import cron_store
from dynworkers.runtime.daemon.crons import CronScheduler
from dynworkers.runtime.daemon.front import FrontDoor
from dynworkers.runtime.daemon.logs import TenantLogs
from dynworkers.runtime.daemon.prometheus import DaemonMetrics
from dynworkers.runtime.daemon.tenants import Tenants
from dynworkers.runtime.errors import DynworkersError, TenantError
from dynworkers.runtime.supervisor import Supervisor, SupervisorConfig

log = logging.getLogger("dynworkers.daemon")

#: the one dynamic workflow that runs every tenant's TenantWorkflow
WORKFLOW = "tenants"
#: connections the control listener accepts at once (the front door's cap is configured)
CONTROL_CONNECTIONS = 128
#: seconds, past the drain, to write the 503s and close connections
ANSWER_GRACE = 1.0


T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run the daemon's coroutine to its end on uvloop when it is importable, else on asyncio's
    own loop (the same behaviour, more CPU per request: uvloop's turn, transports and timers are
    C; under wrk it took 5-10% off the event loop thread's CPU per HTTP request, the thread
    that bounds the daemon's throughput)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class ListenError(DynworkersError, OSError):
    """A listener could not bind its address; the message names the address and the setting."""


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
            self.supervisor,
            store=config.store_url,
            max_running=config.max_running,
            host=config.host_id or None,
            address=f"http://{config.host}:{config.port}",
            lease=config.lease,
            poll_interval=config.poll_interval,
            durability=config.durability,
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
            body_timeout=config.body_timeout,
            trust_forwarded=config.trust_forwarded,
            expose_errors=config.expose_errors,
            access_log=config.access_log,
        )
        self._access_level()
        self.control = ControlAPI(self)
        #: runs the tenants' cron triggers (runtime.daemon.crons), from start() on
        self.crons: CronScheduler | None = None
        self._runners: list[web.AppRunner] = []
        self._front_runner: web.AppRunner | None = None
        self._requests: asyncio.Queue[str] = asyncio.Queue()
        self.started = False
        #: both listeners are up: a failure from here on is not a refusal to start
        self.serving = False
        self.stopping = False
        self.guards: dict[str, ConnectionGuard] = {}
        self.urls: dict[str, str] = {}

    # --- starting --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; StateDirInUse or StateDirUnusable before anything else ran."""
        state = Path(self.config.state_dir)
        await self.supervisor.start()  # takes the state directory first
        self.started = True
        self.logs.install()
        self.engine.register(WORKFLOW, create_dynamic_workflow_entrypoint(self.tenants.load_runner))
        self.tenants.deployments.load()
        if self.config.store_url.startswith(("postgresql://", "postgres://")):
            await self.tenants.share(self.config.store_url)  # the store's versions, compiled
        report = await self.tenants.reload()
        served = sorted(self.tenants.deployments.current)
        log.info("tenants: %s", ", ".join(served) if served else "none yet")
        if report["failed"]:
            log.error("tenants whose code does not compile: %s", ", ".join(report["failed"]))
        await self.engine.start()
        if self.tenants.shared is not None:
            self.tenants.shared.listen(self.engine.store)  # deploys through other hosts
        self.crons = CronScheduler(
            cron_store(self.config.store_url, state),
            self.tenants.crons,
            self.run_scheduled,
            self.config.host_id or f"{socket.gethostname()}:{os.getpid()}",
        )
        await self.crons.start()
        self.metrics.start()
        self._front_runner = await self._listen(
            self.front.app(), self.config.host, self.config.port, "front"
        )
        await self._listen(
            self.control.app(), self.config.control_host, self.config.control_port, "control"
        )
        partial = state / f".daemon.json.{os.getpid()}"
        partial.write_text(json.dumps({"pid": os.getpid(), **self.urls}))
        partial.replace(state / "daemon.json")  # atomic: a reader sees all of it or none
        self.serving = True
        log.info(
            "dynworkers serving tenants on %s/<tenant>/, control API on %s/_/",
            self.urls["front"],
            self.urls["control"],
        )

    async def _listen(self, app: web.Application, host: str, port: int, name: str) -> web.AppRunner:
        if name == "front":
            needed = self.config.max_connections + CONTROL_CONNECTIONS + FD_RESERVE
            limit = raise_fd_limit(needed)
            cap = max(1, min(self.config.max_connections, limit - CONTROL_CONNECTIONS - FD_RESERVE))
            if cap < self.config.max_connections:
                log.warning(
                    "max_connections lowered to %d: the open-files limit is %d (raise it with "
                    "ulimit -n)",
                    cap,
                    limit,
                )
        else:
            cap = CONTROL_CONNECTIONS
        guard = ConnectionGuard(cap, self.config.header_timeout)
        app.middlewares.insert(0, guard.middleware)
        # shutdown_timeout: what cleanup() gives requests still running (stop() drains first)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=ANSWER_GRACE,
            keepalive_timeout=self.config.keepalive_timeout,
            logger=quiet_server_log(),
        )
        await runner.setup()
        site = GuardedSite(runner, host, port, guard)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            setting = "port" if name == "front" else "control_port"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(
                f"cannot listen on {host}:{port} for the {name} listener: {reason} (set "
                f"{setting}, DYNWORKERS_{setting.upper()} or --{setting.replace('_', '-')} to a "
                "free port, or stop what holds it)"
            ) from None
        self.guards[name] = guard
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
            await self.stop()  # a second signal while stopping ends the drain at once
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        return 0

    async def run_scheduled(self, tenant: str, cron: str, scheduled_ms: int) -> None:
        """One cron tick: the tenant's `scheduled` handler; its failure goes to its log."""
        try:
            stub = await self.tenants.stub(tenant)
            await stub.get_entrypoint().scheduled({"cron": cron, "scheduled_time": scheduled_ms})
        except TenantError as exc:
            self.logs.tenant_error(tenant, exc)

    def request_stop(self) -> None:
        self._requests.put_nowait("stop")

    def request_reload(self) -> None:
        """What SIGHUP does, from the loop (`dynworkers dev` on a file change)."""
        self._requests.put_nowait("reload")

    async def reload(self) -> None:
        if self.reload_config is not None:
            try:
                config = self.reload_config()
            except ConfigError as exc:
                log.error("reload: the config was not applied: %s", exc)
                config = self.config
            self._apply(config)
        report = await self.tenants.reload()
        done = [
            f"{verb} {', '.join(report[key])}"
            for key, verb in (("deployed", "deployed"), ("removed", "removed"))
            if report[key]
        ]
        if report["failed"]:
            log.error(
                "reloaded: %s; not deployed: %s (see the errors above; the "
                "versions served before keep serving)",
                "; ".join(done) or "nothing changed",
                ", ".join(report["failed"]),
            )
        else:
            log.info("reloaded: %s", "; ".join(done) or "nothing changed")

    def _apply(self, config: DaemonConfig) -> None:
        old = dataclasses.asdict(self.config)
        new = dataclasses.asdict(config)
        waiting = sorted(name for name in new if new[name] != old[name] and name not in RELOADABLE)
        if waiting:
            log.warning("reload: %s changed and take effect at the next restart", waiting)
        applied = {name: new[name] for name in RELOADABLE}
        self.config = dataclasses.replace(self.config, **applied)
        self.front.domain = self.config.domain
        self.front.expose_errors = self.config.expose_errors
        self.front.access_log = self.config.access_log
        logging.getLogger("dynworkers").setLevel(self.config.log_level.upper())
        self._access_level()
        try:
            self.tenants.configure(self.config)
        except Exception as exc:
            log.error("reload: %s", exc)

    def _access_level(self) -> None:
        """Access lines were asked for: they show whatever `log_level` is."""
        access = logging.getLogger("dynworkers.access")
        access.setLevel(logging.INFO if self.config.access_log else logging.NOTSET)

    # --- stopping --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Drain within `drain_timeout` in all, then close everything; safe after a failed
        start, and a second signal cuts the drain short."""
        if self.stopping:
            return
        self.stopping = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        in_flight = self.front.in_flight
        if self._front_runner is not None:
            for site in list(self._front_runner.sites):
                await site.stop()  # no new connections; those open finish their requests
            await self._drain(started + self.config.drain_timeout)
            aborted = self.front.abort()
            if aborted:
                log.warning(
                    "%d request(s) still running after the drain were answered 503", aborted
                )
            await self._front_runner.cleanup()
        if in_flight:
            log.info("drained %d request(s) in flight in %.2f s", in_flight, loop.time() - started)
        await _maybe_await(self.logs.close())
        for runner in self._runners:
            if runner is not self._front_runner:
                await runner.cleanup()
        self.metrics.close()
        if self.crons is not None:
            await self.crons.close()
        await self.tenants.close()
        await self.engine.close()
        await self.supervisor.close()
        self.logs.uninstall()
        self._remove_where()
        if self.started:
            log.info("stopped")

    async def _drain(self, deadline: float) -> None:
        """Until no tenant request is running, the deadline, or a second stop signal."""
        loop = asyncio.get_running_loop()
        drained = loop.create_task(self.front.drained())
        while not drained.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            signal_ = loop.create_task(self._requests.get())
            done, _ = await asyncio.wait(
                {drained, signal_}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if signal_ not in done:
                signal_.cancel()
            elif signal_.result() == "stop":
                log.warning("second stop signal: not waiting for requests in flight")
                break
        drained.cancel()

    def _remove_where(self) -> None:
        """Remove daemon.json if it is this process's (another daemon's stays)."""
        path = Path(self.config.state_dir) / "daemon.json"
        try:
            owner = json.loads(path.read_text()).get("pid")
        except (OSError, ValueError, AttributeError):
            return
        if owner == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value
