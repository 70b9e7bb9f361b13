"""A real Supervisor and Engine with tenants deployed from source, for the engine tests.

`Harness` starts both on a test's state directory (SQLite on disk, real sandboxes), deploys
tenants with `env.KV` and `env.WORKFLOWS` (the wrapped dynamic binding), and registers the one
dynamic workflow that serves them all. `wait_for` polls an instance's status without ever
asserting a duration: the timeout only guards against a hang.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from dynworkers.engine import (
    Engine,
    Instance,
    create_dynamic_workflow_entrypoint,
    wrap_workflow_binding,
)
from dynworkers.loader import WorkerCode
from dynworkers.runtime import Supervisor, SupervisorConfig

WORKFLOW = "dynamic-workflow"


class Harness:
    def __init__(self, config: SupervisorConfig, **engine_options: Any) -> None:
        self.config = config
        self.engine_options = engine_options
        self.sources: dict[str, dict[str, str]] = {}  # tenant -> version -> source
        self.latest: dict[str, str] = {}
        self.loads: list[tuple[str, str | None]] = []  # (tenant, ctx.version) per wake-up
        self.labels: dict[str, str] = {}  # source hash -> version label
        self.pin_versions = engine_options.pop("pin_versions", False)

    async def __aenter__(self) -> Harness:
        self.supervisor = Supervisor(self.config)
        await self.supervisor.start()
        self.engine = Engine(self.supervisor, **self.engine_options)
        await self.engine.start()
        self.workflow = self.engine.register(
            WORKFLOW,
            create_dynamic_workflow_entrypoint(self.load_runner, pin_versions=self.pin_versions),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.close()
        await self.supervisor.close()

    def deploy(self, tenant: str, source: str, version: str = "v1") -> None:
        self.sources.setdefault(tenant, {})[version] = source
        self.latest[tenant] = version
        self.supervisor.loader.forget(f"{tenant}@{version}")

    def code(self, tenant: str, version: str) -> WorkerCode:
        return WorkerCode(
            "main",
            {"main": self.sources[tenant][version]},
            env={
                "KV": self.supervisor.kv("kv"),
                "WORKFLOWS": wrap_workflow_binding({"tenant_id": tenant}),
            },
        )

    async def stub(self, tenant: str, version: str | None = None) -> Any:
        version = version or self.latest[tenant]
        worker_id = f"{tenant}@{version}"
        stub = await self.supervisor.loader.get(worker_id, lambda: self.code(tenant, version))
        self.labels[stub.version] = version
        return stub

    async def load_runner(self, metadata: dict[str, Any], env: Any, ctx: Any) -> Any:
        """The host's loader callback: the pinned version when there is one, else the latest."""
        tenant = metadata["tenant_id"]
        self.loads.append((tenant, ctx.version))
        version = self.labels.get(ctx.version) if ctx.version is not None else None
        stub = await self.stub(tenant, version)
        return stub.get_entrypoint("TenantWorkflow")

    async def fetch(self, tenant: str, body: Any = None) -> Any:
        stub = await self.stub(tenant)
        response = await stub.fetch("http://tenant/", method="POST", body=json.dumps(body or {}))
        return response.json()

    def kv(self, tenant: str, key: str, version: str | None = None) -> Any:
        """A key of the tenant's KV, read on the host (KV is scoped by worker id)."""
        worker_id = f"{tenant}@{version or self.latest[tenant]}"
        return self.supervisor.kv("kv").store.get(worker_id, "kv", key)

    async def wait_for(
        self, instance: Instance | str, *statuses: str, timeout: float = 20.0
    ) -> dict[str, Any]:
        if isinstance(instance, str):
            instance = self.engine.instance(instance)
        deadline = time.monotonic() + timeout
        while True:
            status = await instance.status()
            if status["status"] in statuses:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{instance} stayed {status}, expected {statuses}")
            await asyncio.sleep(0.01)
