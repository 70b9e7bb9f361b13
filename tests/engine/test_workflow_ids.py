"""Instance ids are unique per workflow, as on Cloudflare: `id="test"` created through two
workflow bindings of one tenant is two instances, each running its own class and each knowing
itself as "test". Real sandboxes; the bindings name their workflows as a wrangler file does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dynworkers.engine import wrap_workflow_binding
from dynworkers.loader import WorkerCode
from tests.engine.harness import Harness

TWO_WORKFLOWS = """
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class Default(WorkerEntrypoint):
    def fetch(self, request):
        a = self.env.WF_A.create(id="test", params={"n": 1})
        b = self.env.WF_B.create(id="test", params={"n": 2})
        return Response.json({"a": a.id, "b": b.id})

    def statuses(self):
        return {
            "a": self.env.WF_A.get("test").status(),
            "b": self.env.WF_B.get("test").status(),
        }


class A(WorkflowEntrypoint):
    def run(self, event, step):
        return {"class": "A", "id": event["instanceId"], "n": event["payload"]["n"]}


class B(WorkflowEntrypoint):
    def run(self, event, step):
        return {"class": "B", "id": event["instanceId"], "n": event["payload"]["n"]}
"""


class TwoWorkflows(Harness):
    def code(self, tenant: str, version: str) -> WorkerCode:
        env = {
            name: wrap_workflow_binding(
                {"tenant_id": tenant, "workflow": workflow, "entrypoint": entrypoint}, name
            )
            for name, workflow, entrypoint in (("WF_A", "alpha", "A"), ("WF_B", "beta", "B"))
        }
        return WorkerCode("main", {"main": self.sources[tenant][version]}, env=env)

    async def load_runner(self, metadata: dict[str, Any], env: Any, ctx: Any) -> Any:
        stub = await self.stub(metadata["tenant_id"])
        return stub.get_entrypoint(metadata["entrypoint"])


def test_one_id_in_two_workflows_of_a_tenant_is_two_instances(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with TwoWorkflows(config()) as h:
            h.deploy("acme", TWO_WORKFLOWS)
            assert await h.fetch("acme") == {"a": "test", "b": "test"}
            a = await h.wait_for("acme/alpha:test", "complete", "errored")
            b = await h.wait_for("acme/beta:test", "complete", "errored")
            assert a["output"] == {"class": "A", "id": "test", "n": 1}
            assert b["output"] == {"class": "B", "id": "test", "n": 2}
            stub = await h.stub("acme")
            seen = await stub.get_entrypoint("Default").statuses()
            assert seen["a"]["output"]["class"] == "A" and seen["b"]["output"]["class"] == "B"
            # the host's binding (no workflow of its own) names the workflow: <workflow>:<id>
            host = wrap_workflow_binding({"tenant_id": "acme"}, engine=h.engine)
            status = await host.call("acme", "status", ["beta:test"], {})
            assert status["output"]["class"] == "B"

    asyncio.run(main())
