"""Test harness for the language layer: compile tenant source with `compile_module` and run it
in a `TenantNamespace`, in-process. A plain module, not a conftest, so that it cannot collide
with the fixtures of other suites in this directory."""

from __future__ import annotations

import os
import types

from dynworkers.sandbox_policy import aio
from dynworkers.sandbox_policy.compiler import compile_module
from dynworkers.sandbox_policy.guards import register_safe_type
from dynworkers.sandbox_policy.namespace import TenantNamespace
from dynworkers.sandbox_policy.policy import Policy


@register_safe_type
class WorkerEntrypoint:
    """Stand-in for the tenant-facing API class."""

    def __init__(self, ctx: object = None, env: object = None) -> None:
        self.ctx = ctx
        self.env = env

    def hello(self) -> str:
        return "hello from the API"


def _api_module() -> types.ModuleType:
    mod = types.ModuleType("workers")
    mod.WorkerEntrypoint = WorkerEntrypoint  # type: ignore[attr-defined]
    mod.os = os  # type: ignore[attr-defined]  # what a careless API file might leak
    return mod


class Tenant:
    """One tenant: its modules, its namespace, and what it printed."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy.default()
        self.modules: dict[str, types.ModuleType] = {}
        self.sources: dict[str, str] = {}
        self.printed: list[str] = []
        self.ns = TenantNamespace(
            self.policy,
            import_tenant_module=self._import,
            api_modules={"workers": _api_module(), "asyncio": aio.asyncio_module()},
            emit_print=self.printed.append,
        )

    def _import(self, name: str) -> object | None:
        if name in self.modules:
            return self.modules[name]
        if name in self.sources:
            return self.load(name, self.sources[name])
        return None

    def load(self, name: str, source: str) -> types.ModuleType:
        code = compile_module(source, f"{name}.py", self.policy)
        module = types.ModuleType(name)
        module.__dict__.update(self.ns.module_globals(name))
        self.modules[name] = module
        exec(code, module.__dict__)
        return module

    def run(self, source: str, **other_modules: str) -> dict[str, object]:
        self.sources.update(other_modules)
        return self.load("main", source).__dict__


def run(source: str, policy: Policy | None = None, **other_modules: str) -> dict[str, object]:
    """Run `source` as module 'main' of a fresh tenant; return its globals."""
    return Tenant(policy).run(source, **other_modules)


def run_async(source: str, policy: Policy | None = None, **other_modules: str) -> object:
    """Run `source`, then drive its `async def main()` on the sandbox's loop; return its value."""
    main = run(source, policy, **other_modules)["main"]
    return aio.block_on(main())  # type: ignore[operator]
