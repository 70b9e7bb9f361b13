"""The Supervisor: the embeddable host of dynworkers.

Host side; an async context manager that runs on the caller's event loop. It owns the zygote, the
pool, the KV store, the compile cache and the loader, and is the loader's dispatcher: each stub
call becomes `invoke`, which takes an idle sandbox of the tenant from the pool (warm) or
specialises a spare (cold: the tenant's first, or another one for a busy tenant, up to
`max_sandboxes_per_tenant`), sends the call, and waits for the reply within the deadline.

Failures reach the caller typed (see runtime.errors) and stay with the tenant that caused them: a
deadline kills only that sandbox, a crash fails only the calls pending on it, and the next call
rehydrates the tenant in a fresh sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from dynworkers.loader import (
    Binding,
    CompileCache,
    CompiledWorker,
    WorkerCode,
    WorkerLoader,
    compile_worker,
)
from dynworkers.runtime import protocol, tracing
from dynworkers.runtime.bindings import BindingRateLimit, KVBinding, ServiceBinding
from dynworkers.runtime.deadlines import Aborted, CallControl, Deadlines, Expired
from dynworkers.runtime.errors import (
    EntrypointNotFound,
    ResultError,
    SandboxCrashed,
    SandboxError,
    SandboxTimeout,
    SpecialiseError,
    SupervisorClosed,
    TenantError,
)
from dynworkers.runtime.handle import SandboxHandle
from dynworkers.runtime.kv import KVStore, open_kv
from dynworkers.runtime.metrics import PoolMetrics

if TYPE_CHECKING:
    from dynworkers.runtime.kv_postgres import PostgresKV
from dynworkers.runtime.pool import Pool
from dynworkers.runtime.state_dir import RunDir, StateLock, remove_stale_run_dirs
from dynworkers.runtime.tenant_sandboxes import REQUEST, WAKEUP, WORKFLOW_STEP_KIND
from dynworkers.runtime.zygote_client import ZygoteClient
from dynworkers.sandbox_policy import Policy, PolicyError

log = logging.getLogger("dynworkers.supervisor")

WARMUP_SOURCE = """
from workers import WorkerEntrypoint, Response

class Default(WorkerEntrypoint):
    def fetch(self, request):
        items = [n * 2 for n in range(8)]
        return Response.json({"url": request.url, "items": items})
"""
MiB = 1 << 20


@dataclass(frozen=True)
class SupervisorConfig:
    #: Where the KV database and the compile cache live.
    state_dir: str | Path = ".dynworkers"
    #: The store URL: a `postgresql://` one puts the KV in that database, shared by every host;
    #: anything else (or empty) keeps it in `<state_dir>/kv.db`.
    store: str = ""
    #: Most sandboxes specialised at once; the least recently used is evicted past it.
    max_sandboxes: int = 64
    #: Most sandboxes one tenant may have at once (bounded by max_sandboxes): a tenant whose
    #: calls would queue gets another sandbox with the same code, up to this. With 2 or more,
    #: one is always left for the other kind of call (workflow wake-ups vs requests); with 1,
    #: a tenant's calls run one at a time. See runtime/tenant_sandboxes.py for the rule.
    max_sandboxes_per_tenant: int = 4
    #: Blank sandboxes kept booted ahead of need.
    spares: int = 2
    #: Seconds a sandbox may sit unused before it is evicted.
    idle_ttl: float = 300.0
    #: Resident memory ceiling per sandbox, in MiB: checked every `memory_check_interval` while
    #: a call runs (the call fails with MemoryLimitExceeded) and every `sweep_interval` when idle.
    memory_limit_mb: int = 256
    #: Seconds between checks of the memory of sandboxes with a call in flight.
    memory_check_interval: float = 0.25
    #: Seconds an invocation may run before its sandbox is killed.
    deadline: float = 30.0
    #: Seconds a spare may take to fork, connect and confine itself.
    boot_timeout: float = 10.0
    sweep_interval: float = 1.0
    max_concurrent_boots: int = 4
    #: Binding calls a tenant may make a second, across all its sandboxes (0: no limit); a call
    #: over it raises `workers.RateLimited` in the tenant and is counted in stats()["bindings"].
    binding_calls_per_second: float = 2000.0
    #: Binding calls a tenant may make at once before the rate applies.
    binding_call_burst: int = 2000
    #: Loaded workers kept by `loader.get`.
    max_workers: int = 4096
    #: Run a warm-up worker in each spare before it is ready: about 0.5 ms less per cold start,
    #: about 0.7 ms more CPU per spare (turn off when churn throughput matters more).
    prewarm_spares: bool = True
    policy: Policy = field(default_factory=Policy.default)

    def __post_init__(self) -> None:
        if self.max_sandboxes < 1:
            raise PolicyError("SupervisorConfig.max_sandboxes must be >= 1")
        if self.max_sandboxes_per_tenant < 1:
            raise PolicyError(
                "SupervisorConfig.max_sandboxes_per_tenant must be >= 1 (1: a tenant's calls "
                "run one at a time)"
            )
        if self.spares < 0:
            raise PolicyError("SupervisorConfig.spares must be >= 0")
        if self.binding_calls_per_second < 0 or self.binding_call_burst < 1:
            raise PolicyError(
                "SupervisorConfig.binding_calls_per_second must be >= 0 (0: no limit) and "
                "binding_call_burst >= 1"
            )
        for name in (
            "idle_ttl",
            "deadline",
            "boot_timeout",
            "sweep_interval",
            "memory_check_interval",
        ):
            if getattr(self, name) <= 0:
                raise PolicyError(f"SupervisorConfig.{name} must be > 0")


class Supervisor:
    def __init__(self, config: SupervisorConfig | None = None) -> None:
        self.config = config or SupervisorConfig()
        self.state_dir = Path(self.config.state_dir)
        self.metrics = PoolMetrics()
        self.cache = CompileCache(None)
        self.loader = WorkerLoader(self, self.config.policy, self.cache, self.config.max_workers)
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._zygote: ZygoteClient | None = None
        self._pool: Pool | None = None
        self._kv: KVStore | PostgresKV | None = None
        self._run_dir: RunDir | None = None
        self._lock = StateLock(self.state_dir)
        self._sweeper: asyncio.Task[None] | None = None
        self._deadlines: Deadlines | None = None
        self.rate_limit = BindingRateLimit(
            self.config.binding_calls_per_second, self.config.binding_call_burst
        )
        self._started = 0.0
        self.closed = False
        #: sections other components add to `stats()` (the engine adds "workflows")
        self.extra_stats: dict[str, Callable[[], Any]] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Take the state directory (StateDirInUse, StateDirUnusable), then start the zygote
        and the spares. An `Engine(supervisor)` shares the directory under this lock."""
        self._lock.acquire()  # before anything else touches the directory
        tracing.refresh()  # spans only when a tracer provider is set by now
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        remove_stale_run_dirs()
        self.cache.directory = self.state_dir / "compile-cache"
        self.state_dir.chmod(0o700)  # tenants' data: no other user (a sandbox's uid) may enter
        self.cache.directory.mkdir(mode=0o700, exist_ok=True)
        self._kv = await open_kv(self.config.store, self.state_dir)
        self._run_dir = RunDir()
        self._deadlines = Deadlines(asyncio.get_running_loop())
        self._context = zmq.Context()
        self._zygote = ZygoteClient(
            self.config.policy, self._on_exit, self._on_zygote_lost, warmup=self._warmup()
        )
        self._pool = Pool(
            zygote=self._zygote,
            context=self._context,
            run_dir=self._run_dir.path,
            max_sandboxes=self.config.max_sandboxes,
            spares=self.config.spares,
            boot_timeout=self.config.boot_timeout,
            max_frame=self.config.policy.max_result_bytes,
            max_concurrent_boots=self.config.max_concurrent_boots,
            metrics=self.metrics,
            rate_limit=self.rate_limit,
            max_sandboxes_per_tenant=self.config.max_sandboxes_per_tenant,
        )
        await self._zygote.start()
        self._pool.replenish()
        self._pool.watch_memory(self.config.memory_check_interval)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        self._started = time.monotonic()

    def _warmup(self) -> list[protocol.ModuleCode]:
        """The warm-up worker each spare runs once, compiled under this supervisor's policy."""
        if not self.config.prewarm_spares:
            return []
        worker = compile_worker(
            "warm-up",
            WorkerCode("main", {"main": WARMUP_SOURCE}),
            self.config.policy,
            CompileCache(None),  # not the tenants' cache: its figures stay theirs
        )
        return [
            protocol.ModuleCode(name=m.name, source=m.source, code=m.code) for m in worker.modules
        ]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._pool is not None:
            await self._pool.close()
        if self._deadlines is not None:
            self._deadlines.close()
        if self._zygote is not None:
            await self._zygote.close()
        if self._context is not None:
            self._context.destroy(linger=0)
        if self._kv is not None:
            closed = self._kv.close()
            if inspect.isawaitable(closed):
                await closed
        await self.loader.close()
        if self._run_dir is not None:
            self._run_dir.remove()
        self._lock.release()

    def _on_exit(self, exited: protocol.Exited) -> None:
        if self._pool is not None:
            self._pool.on_exit(exited)

    def _on_zygote_lost(self) -> None:
        log.error("the zygote died; its sandboxes are gone; the next boot restarts it")
        if self._pool is not None:
            self._pool.on_zygote_lost()

    async def _sweep(self) -> None:
        """Evict idle and oversized sandboxes and top the spares up, every `sweep_interval`.
        A failure (an OSError when file descriptors run out, say) is logged and the next round
        runs as usual: the sweeper outlives every fault."""
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            assert self._pool is not None
            try:
                self._pool.sweep(self.config.idle_ttl)
                self._pool.replenish()
            except Exception as exc:
                log.error(
                    "sweep failed (%s: %s); sandboxes were not checked this round, the next "
                    "round runs in %g s",
                    type(exc).__name__,
                    exc,
                    self.config.sweep_interval,
                )

    @property
    def pool(self) -> Pool:
        if self._pool is None or self.closed:
            raise SupervisorClosed(
                "the supervisor is not running: use `async with Supervisor(...)`"
            )
        return self._pool

    # --- bindings --------------------------------------------------------------------------------

    def kv(self, namespace: str) -> KVBinding:
        """A KV namespace binding; each tenant that holds it sees only its own keys."""
        if self._kv is None:
            raise SupervisorClosed("start the supervisor before creating bindings")
        return KVBinding(self._kv, namespace)

    def service(self, cls: type, props: dict[str, Any] | None = None) -> ServiceBinding:
        """A binding to the public methods of a host class, instantiated with these props."""
        return ServiceBinding(cls, props)

    # --- dispatch --------------------------------------------------------------------------------

    async def invoke(
        self,
        worker: CompiledWorker,
        entrypoint: str | None,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        props: Any,
    ) -> Any:
        """Run one call in the worker's sandbox (a span of its own with tracing on)."""
        if tracing.ENABLED:
            with tracing.invoke_span(worker.worker_id, entrypoint, method) as trace:
                return await self._invoke(worker, entrypoint, method, args, kwargs, props, trace)
        return await self._invoke(worker, entrypoint, method, args, kwargs, props, None)

    async def _invoke(
        self,
        worker: CompiledWorker,
        entrypoint: str | None,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        props: Any,
        trace: tracing.InvokeTrace | None,
    ) -> Any:
        """Run one call in the worker's sandbox; the loader's stubs call this.

        A `Binding` among the positional arguments is granted to the sandbox for this call only
        (it arrives as a stub) and may move the call's deadline through `CallControl`.

        Observers of `metrics` hear "ready.warm" with the seconds from entering here to holding
        a warm sandbox and the tenant's turn. A cold start's readiness is the pool's "boot":
        the call is pipelined behind specialisation, so this method never sees that moment."""
        started = time.perf_counter()
        pool = self.pool
        deadlines = self._deadlines
        assert deadlines is not None  # set before the pool
        passed = [value for value in args if isinstance(value, Binding)]
        try:
            plain = [None if isinstance(v, Binding) else v for v in args] if passed else args
            payload = protocol.encode([plain, kwargs])
            props_payload = b"\xc0" if props is None else protocol.encode(props)  # msgpack nil
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"arguments and props must be plain data: {exc}") from None
        timeout = worker.limits.deadline or self.config.deadline
        kind = REQUEST
        if passed and any(b.kind == WORKFLOW_STEP_KIND for b in passed):
            kind = WAKEUP  # a workflow wake-up: never waits behind the tenant's requests alone
        deadline = deadlines.loop.time() + timeout
        while True:
            # The sandbox is this call's alone until released; waiting for it (queued behind the
            # tenant's earlier calls, or for room in a full pool) ends in PoolBusy at `deadline`.
            handle, cold = await pool.acquire(worker, deadline, kind)
            if cold:
                limit = worker.limits.memory_mb or self.config.memory_limit_mb
                handle.memory_limit = limit * MiB
            try:
                if trace is not None:
                    tracing.acquired(trace, handle, cold)
                if not handle.alive:
                    continue  # it died before our turn came: rehydrate
                if not cold and self.metrics.observers:
                    ready = time.perf_counter() - started
                    self.metrics.tell("ready.warm", handle.tenant_id, ready)
                grants = handle.grant_arguments(args) if passed else []
                future = handle.channel.request(
                    functools.partial(
                        protocol.Invoke,
                        entrypoint=entrypoint,
                        method=method,
                        args=payload,
                        props=props_payload,
                        grants=grants,
                    )
                )
                # The deadline counts from the call's turn: time spent queued behind the
                # tenant's earlier calls is not this call's doing.
                control = CallControl(future, timeout, deadlines)
                for binding in passed:
                    binding.granted(control)
                try:
                    reply = await self._wait(pool, handle, future, control)
                finally:
                    handle.revoke(grants)
            finally:
                if trace is not None:
                    handle.trace_context = None
                pool.release(handle)
            return self._result(handle, reply)

    async def _wait(
        self,
        pool: Pool,
        handle: SandboxHandle,
        future: asyncio.Future[protocol.Message],
        control: CallControl,
    ) -> protocol.Message:
        try:
            return await future
        except Expired:
            error = SandboxTimeout(
                handle.tenant_id,
                f"tenant {handle.tenant_id!r} did not answer within its {control.timeout:g} s "
                "deadline; its sandbox was killed and the next call starts a fresh one",
            )
            pool.evict(handle, "deadline", error)
            raise error from None
        except Aborted as exc:
            aborted = SandboxError(handle.tenant_id, f"the call was abandoned: {exc}", "aborted")
            pool.evict(handle, "aborted", aborted)
            raise aborted from None
        finally:
            control.cancel()

    def _result(self, handle: SandboxHandle, reply: protocol.Message) -> Any:
        tenant = handle.tenant_id or "?"
        if isinstance(reply, protocol.Returned):
            try:
                return protocol.decode_plain(reply.value)
            except (msgspec.DecodeError, ValueError, RecursionError) as exc:
                self.pool.evict(handle, "protocol")
                raise SandboxCrashed(
                    tenant, f"tenant {tenant!r} sent an undecodable result: {exc}"
                ) from None
        assert isinstance(reply, protocol.Failed)
        error = reply.error
        if error.kind == "specialise":
            self.pool.evict(handle, "specialise")
        kinds: dict[str, type[TenantError]] = {
            "entrypoint": EntrypointNotFound,
            "result": ResultError,
            "specialise": SpecialiseError,
        }
        raise kinds.get(error.kind, TenantError)(
            tenant, error.type_name, error.message, error.traceback
        )

    # --- inspection ------------------------------------------------------------------------------

    async def ready(self, timeout: float = 30.0) -> None:
        """Return once the pool holds its `spares` (or every spare boot has ended, some having
        failed): the state in which a cold start takes about a millisecond. `start()` returns
        before the spares have booted, so the first calls after it may fork their own sandbox;
        a host that measures, or wants its first requests fast, awaits this. TimeoutError after
        `timeout` seconds."""
        pool = self.pool
        deadline = time.monotonic() + timeout
        while len(pool.spares) < pool.target_spares and pool.spare_boots:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(pool.spares)} of {pool.target_spares} spares booted within "
                    f"{timeout} s; the host may be overloaded (see stats()['pool'])"
                )
            await asyncio.sleep(0.005)

    def evict(self, tenant_id: str, reason: str = "manual") -> bool:
        """End every sandbox of the tenant, busy or idle (calls running in them fail with
        `SandboxCrashed`); its next call rehydrates it. False when it had none."""
        return self.pool.evict_tenant(tenant_id, reason) > 0

    def sandbox_pid(self, tenant_id: str) -> int | None:
        """The pid of the tenant's oldest live sandbox, or None when it has none (a busy tenant
        may have several: `sandbox_pids`)."""
        for handle in self.pool.sandboxes(tenant_id):
            return handle.pid
        return None

    def sandbox_pids(self, tenant_id: str) -> list[int]:
        """The pids of all of the tenant's live sandboxes, oldest first."""
        return [handle.pid for handle in self.pool.sandboxes(tenant_id)]

    def stats(self) -> dict[str, Any]:
        pool = self.pool
        return {
            "pool": {
                "size": len(pool.lru),
                "max_sandboxes": pool.max_sandboxes,
                "max_sandboxes_per_tenant": pool.max_per_tenant,
                "spares": len(pool.spares),
                "booting": pool.booting,
            },
            #: per tenant with a sandbox or a call waiting: sandboxes live, busy, calls queued
            "tenants": {
                tenant: {
                    "sandboxes": len(group.sandboxes),
                    "busy": group.busy[0] + group.busy[1],
                    "queued": group.queued,
                }
                for tenant, group in pool.active.items()
            },
            **self.metrics.snapshot(),
            "bindings": {"rate_limited": self.rate_limit.refused_total},
            "hardening": {
                "active": list(pool.layers),
                "unavailable": [list(pair) for pair in pool.unavailable],
            },
            "loader": {
                "workers": len(self.loader.workers),
                "callbacks_run": self.loader.callbacks_run,
                "compile_cache": {
                    "hits": self.cache.hits,
                    "disk_hits": self.cache.disk_hits,
                    "misses": self.cache.misses,
                },
            },
            "uptime_s": round(time.monotonic() - self._started, 3),
            **{name: section() for name, section in self.extra_stats.items()},
        }
