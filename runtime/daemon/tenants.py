"""Tenants: from a tenant id to a loaded worker, for requests and for workflow wake-ups.

Host side, on the daemon's event loop. Each tenant is one worker whose id is the tenant id (so its
KV and its sandbox stay its own across deploys) with `env.KV` and `env.WORKFLOWS` by default,
or, when its directory has a wrangler file, exactly the vars, KV namespaces and workflows that
file declares (runtime.daemon.wrangler; its crons are read by runtime.daemon.crons).
Its code comes from the deployments (the code directory and the control API) or, when the config
names one, from a trusted dispatcher module with `load(tenant_id) -> WorkerCode | None`, which
also decides the tenant's bindings (it may take a second argument, `HostBindings`, to grant the
defaults). Its workflow instances run its `TenantWorkflow` class (or the class named by
`entrypoint` in the binding's metadata).

Errors: `UnknownTenant` (404), `loader.CompileError` (the tenant's code does not compile; the
version served before, if any, keeps serving), `InvalidTenant`, `DeployRefused` (a dispatcher
module owns the code), `NoWorkflowClass` (a workflow asked of a tenant whose current code
defines no `TenantWorkflow` at the top of its main module: checked from the source, before
anything is created, so the instance does not error at its first wake-up).

`delete(tenant)` stops serving a tenant deployed through the API or the code directory: its
sandboxes end, its versions and history stay on disk (a later deploy is the next entry), its KV
and workflow instances stay in the store. An unchanged code directory does not bring it back;
a changed one (or a new deploy) does.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.util
import inspect
import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dynworkers.engine import Engine, wrap_workflow_binding
from dynworkers.loader import CompileError, Limits, WorkerCode, compile_worker
from dynworkers.loader.stub import EntrypointStub, WorkerStub
from dynworkers.runtime.daemon.config import DaemonConfig
from dynworkers.runtime.daemon.deployments import (
    Deployments,
    InvalidTenant,
    Version,
    check_tenant_id,
)
from dynworkers.runtime.daemon.wrangler import (
    WRANGLER_MODULE,
    WranglerConfig,
    WranglerError,
    config_of,
)
from dynworkers.runtime.errors import DynworkersError
from dynworkers.runtime.supervisor import Supervisor

if TYPE_CHECKING:
    from dynworkers.runtime.daemon.shared_deployments import SharedDeployments

log = logging.getLogger("dynworkers.tenants")

WORKFLOW_CLASS = "TenantWorkflow"
KV_NAMESPACE = "kv"


class UnknownTenant(DynworkersError, LookupError):
    """No code is deployed for this tenant id."""


class DeployRefused(DynworkersError):
    """Code cannot be deployed through the daemon: a dispatcher module is its source."""


class NoWorkflowClass(DynworkersError, ValueError):
    """The tenant's current code defines no workflow class, so an instance could never run."""


def top_level_names(source: str) -> set[str]:
    """Names a module binds at its top level: classes, functions, assignments, imports."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


class HostBindings:
    """What a dispatcher module's `load(tenant_id, host)` may grant a tenant."""

    def __init__(self, supervisor: Supervisor, engine: Engine) -> None:
        self._supervisor = supervisor
        self._engine = engine

    def kv(self, namespace: str = KV_NAMESPACE) -> Any:
        return self._supervisor.kv(namespace)

    def workflows(self, tenant_id: str, **metadata: Any) -> Any:
        return wrap_workflow_binding({**metadata, "tenant_id": tenant_id}, engine=self._engine)

    def default_env(self, tenant_id: str) -> dict[str, Any]:
        """`env.KV` and `env.WORKFLOWS`, as every code-directory tenant gets them."""
        return {"KV": self.kv(), "WORKFLOWS": self.workflows(tenant_id)}

    def wrangler_env(self, tenant_id: str, config: WranglerConfig) -> dict[str, Any]:
        """What a wrangler file declares, and nothing else (as on Cloudflare): vars and
        secrets as plain values, its KV namespaces and its workflows."""
        env: dict[str, Any] = {**config.vars, **config.secrets}
        for binding, namespace in config.kv.items():
            env[binding] = self.kv(namespace)
        for binding, workflow in config.workflows.items():
            env[binding] = wrap_workflow_binding(
                {
                    "tenant_id": tenant_id,
                    "entrypoint": workflow["class_name"],
                    "workflow": workflow["name"],
                },
                binding,
                engine=self._engine,
            )
        return env


def import_dispatcher(name: str) -> ModuleType:
    """`package.module` from sys.path, or a path to a .py file."""
    try:
        if name.endswith(".py"):
            spec = importlib.util.spec_from_file_location("dynworkers_dispatcher", name)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(name)
    except Exception as exc:  # trusted host code, but a typo in it must not read as a crash
        raise InvalidTenant(
            f"dispatcher module {name!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(getattr(module, "load", None)):
        raise InvalidTenant(f"dispatcher module {name!r} has no load(tenant_id) function")
    return module


class Tenants:
    def __init__(self, supervisor: Supervisor, engine: Engine, config: DaemonConfig) -> None:
        self.supervisor = supervisor
        self.engine = engine
        self.host = HostBindings(supervisor, engine)
        self.deployments = Deployments(
            Path(config.state_dir), Path(config.tenants) if config.tenants else None
        )
        self.dispatcher: ModuleType | None = None
        self.dispatcher_name = ""
        self.configure(config)
        #: tenants whose current code does not compile: (version, error), answered at once
        self.broken: dict[str, tuple[str, CompileError]] = {}
        #: the store's deployments, when the store is PostgreSQL (several hosts)
        self.shared: SharedDeployments | None = None

    def configure(self, config: DaemonConfig) -> None:
        self.deployments.directory = Path(config.tenants) if config.tenants else None
        self.dispatcher = import_dispatcher(config.dispatcher) if config.dispatcher else None
        self.dispatcher_name = config.dispatcher

    # --- sharing deployments with other hosts --------------------------------------------------

    async def share(self, store_url: str) -> None:
        """Take deployments from the PostgreSQL store (runtime.daemon.shared_deployments)."""
        from dynworkers.runtime.daemon.shared_deployments import SharedDeployments

        shared = SharedDeployments(store_url, self.deployments, self._compile, self.broken)
        shared.changed = self._forget
        await shared.open()
        self.shared = shared
        await shared.sync()

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    async def history(self, tenant: str) -> list[dict[str, Any]]:
        if self.shared is not None:
            return await self.shared.history(tenant)
        return self.deployments.history(tenant)

    # --- serving ---------------------------------------------------------------------------------

    def loaded(self, tenant: str) -> WorkerStub | None:
        """The tenant's stub when the loader holds it (the warm path: no checks beyond the
        loader's own cache, and no coroutine), else None: then `stub`."""
        return self.supervisor.loader.workers.get(tenant)

    async def stub(self, tenant: str) -> WorkerStub:
        stub = self.loaded(tenant)
        if stub is not None:
            return stub
        check_tenant_id(tenant)
        if self.dispatcher is not None:
            return await self.supervisor.loader.get(tenant, lambda: self._dispatch(tenant))
        version = self.deployments.current.get(tenant)
        if version is None:
            raise UnknownTenant(
                f"no tenant {tenant!r} is deployed: add {tenant}/main.py to the code directory "
                f"or PUT /_/tenants/{tenant}"
            )
        broken = self.broken.get(tenant)
        if broken is not None and broken[0] == version.version:
            raise broken[1]
        try:
            return await self.supervisor.loader.get(tenant, lambda: self.worker_code(version))
        except CompileError as exc:
            self.broken[tenant] = (version.version, exc)
            raise

    def worker_code(self, version: Version) -> WorkerCode:
        wrangler = self.wrangler(version)
        if wrangler is None:
            return WorkerCode(
                version.main_module, version.modules, env=self.host.default_env(version.tenant)
            )
        modules = {k: v for k, v in version.modules.items() if k != WRANGLER_MODULE}
        limits = None
        if wrangler.cpu_ms is not None:
            ceiling = self.supervisor.config.deadline
            limits = Limits(deadline=min(wrangler.cpu_ms / 1000, ceiling))
        env = self.host.wrangler_env(version.tenant, wrangler)
        return WorkerCode(version.main_module, modules, env=env, limits=limits)

    @staticmethod
    def wrangler(version: Version) -> WranglerConfig | None:
        """The wrangler config deployed with this version, if any."""
        try:
            return config_of(version.modules)
        except WranglerError as exc:
            raise InvalidTenant(f"tenant {version.tenant!r}: {exc}") from None

    def crons(self) -> dict[str, list[str]]:
        """The cron triggers of every served tenant that declares some."""
        found = {}
        for tenant, version in self.deployments.current.items():
            if WRANGLER_MODULE not in version.modules:
                continue
            try:
                wrangler = self.wrangler(version)
            except InvalidTenant:
                continue
            if wrangler is not None and wrangler.crons:
                found[tenant] = wrangler.crons
        return found

    async def _dispatch(self, tenant: str) -> WorkerCode:
        assert self.dispatcher is not None
        load = self.dispatcher.load
        takes_host = len(inspect.signature(load).parameters) >= 2
        code = load(tenant, self.host) if takes_host else load(tenant)
        if inspect.isawaitable(code):
            code = await code
        if code is None:
            raise UnknownTenant(f"the dispatcher has no tenant {tenant!r}")
        if not isinstance(code, WorkerCode):
            raise InvalidTenant(
                f"the dispatcher's load({tenant!r}) returned {type(code).__name__}, "
                "not a WorkerCode"
            )
        return code

    async def load_runner(self, metadata: Any, env: Any, ctx: Any) -> EntrypointStub:
        """The dynamic workflow's loader: the tenant's current code, its workflow class."""
        if not isinstance(metadata, dict) or not isinstance(metadata.get("tenant_id"), str):
            raise InvalidTenant(f"workflow metadata {metadata!r} names no tenant_id")
        tenant = metadata["tenant_id"]
        stub = await self.stub(tenant)
        entrypoint = metadata.get("entrypoint")
        if not entrypoint:  # created through the control API: the one workflow declared
            version = self.deployments.current.get(tenant)
            wrangler = self.wrangler(version) if version is not None else None
            if wrangler is not None and len(wrangler.workflows) == 1:
                entrypoint = next(iter(wrangler.workflows.values()))["class_name"]
        return stub.get_entrypoint(str(entrypoint or WORKFLOW_CLASS))

    # --- deploying -------------------------------------------------------------------------------

    def _refuse_with_dispatcher(self) -> None:
        if self.dispatcher is not None:
            raise DeployRefused(
                f"tenant code comes from the dispatcher module {self.dispatcher_name!r}; "
                "deploy through it, or remove `dispatcher` from the config"
            )

    async def _compile(self, version: Version) -> None:
        """Compile off the loop; CompileError lists every error with module and line."""
        wrangler = self.wrangler(version)
        if wrangler is not None and wrangler.unsupported:
            log.warning(
                "tenant %r: %s: dynworkers does not support %s; ignored",
                version.tenant,
                wrangler.file,
                ", ".join(wrangler.unsupported),
            )
        await asyncio.to_thread(
            compile_worker,
            version.tenant,
            self.worker_code(version),
            self.supervisor.config.policy,
            self.supervisor.cache,
        )

    async def deploy(
        self, tenant: str, modules: dict[str, str], main_module: str | None = None
    ) -> tuple[Version, bool]:
        """Compile and serve a new version; a compile error leaves the served one in place."""
        self._refuse_with_dispatcher()
        version = self.deployments.prepare(tenant, modules, main_module, "api")
        await self._compile(version)
        if self.shared is not None:
            return version, await self.shared.publish(version)
        changed = self.deployments.activate(version)
        if changed:
            self._forget(tenant)
        return version, changed

    def _forget(self, tenant: str) -> None:
        self.broken.pop(tenant, None)
        self.supervisor.loader.forget(tenant)

    async def reload(self) -> dict[str, list[str]]:
        """Read the code directory again: deploy what changed, drop tenants whose directory is
        gone. A tenant whose new code fails to compile keeps its old version (or, new, is
        answered with its compile errors)."""
        if self.dispatcher is not None:
            for tenant in list(self.supervisor.loader.workers):
                self._forget(tenant)
            return {"deployed": [], "failed": [], "removed": []}
        changed, gone = self.deployments.scan()
        report: dict[str, list[str]] = {
            "deployed": [],
            "failed": list(self.deployments.refused),  # folders that are not a tenant
            "removed": gone,
        }
        new_host = self.shared is not None and self.deployments.fresh
        self.deployments.fresh = False
        for version in changed:
            if new_host and version.tenant in self.deployments.current:
                # a new host: its directory does not roll back what the store serves
                self.deployments.note_directory(version.tenant, version.version)
                continue
            try:
                await self._compile(version)
            except CompileError as exc:
                log.error(
                    "tenant %r: the code directory's version %s does not compile:\n%s",
                    version.tenant,
                    version.version,
                    exc,
                )
                report["failed"].append(version.tenant)
                if version.tenant not in self.deployments.current:
                    self.broken[version.tenant] = (version.version, exc)
                    self.deployments.current[version.tenant] = version  # answered with its errors
                continue
            if self.shared is not None:
                if await self.shared.publish(version):
                    report["deployed"].append(version.tenant)
            elif self.deployments.activate(version):
                self._forget(version.tenant)
                report["deployed"].append(version.tenant)
        for tenant in gone:
            if self.shared is not None:
                await self.shared.unpublish(tenant)
                continue
            self.deployments.remove(tenant)
            self._forget(tenant)
        return report

    def served(self, tenant: str) -> str | None:
        """The version of the tenant that compiles and is served, if any."""
        version = self.deployments.current.get(tenant)
        if version is None:
            return None
        broken = self.broken.get(tenant)
        return None if broken is not None and broken[0] == version.version else version.version

    def check_workflow_class(self, tenant: str) -> None:
        """NoWorkflowClass unless the tenant's current main module defines `TenantWorkflow`
        (a dispatcher's tenants are not checked: their code is known only once loaded)."""
        version = self.deployments.current.get(tenant)
        if self.dispatcher is not None or version is None:
            return
        if WORKFLOW_CLASS not in top_level_names(version.modules[version.main_module]):
            raise NoWorkflowClass(
                f"tenant {tenant!r} (version {version.version}) has no workflow class: its "
                f"main module {version.main_module!r} defines no {WORKFLOW_CLASS}; add `class "
                f"{WORKFLOW_CLASS}(WorkflowEntrypoint)` with a run(self, event, step) method and "
                "deploy again"
            )

    async def delete(self, tenant: str) -> str:
        """Stop serving `tenant` (see the module doc); the version it served."""
        self._refuse_with_dispatcher()
        version = self.deployments.current.get(tenant)
        if version is None:
            raise UnknownTenant(f"no tenant {tenant!r} is deployed")
        # the code directory's mark stays: an unchanged directory does not deploy it again at
        # the next SIGHUP or start, a changed one does
        if self.shared is not None:
            await self.shared.unpublish(tenant, keep_directory_mark=True)
        else:
            self.deployments.remove(tenant, replicated=True)
        self._forget(tenant)
        self.supervisor.evict(tenant)
        return version.version

    def list(self) -> list[dict[str, Any]]:
        tenants = []
        for tenant, version in sorted(self.deployments.current.items()):
            entry = {"tenant": tenant, **version.describe()}
            broken = self.broken.get(tenant)
            entry["compiles"] = broken is None or broken[0] != version.version
            entry["sandbox_pid"] = self.supervisor.sandbox_pid(tenant)
            tenants.append(entry)
        return tenants
