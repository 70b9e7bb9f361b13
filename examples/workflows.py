# examples/workflows.py: durable workflows for every tenant (python3 examples/workflows.py)
import asyncio

from dynworkers import (
    Engine,
    Supervisor,
    SupervisorConfig,
    WorkerCode,
    create_dynamic_workflow_entrypoint,
    wrap_workflow_binding,
)

SOURCES = {  # the host's tenant code, wherever it keeps it
    "acme": """
from workers import WorkerEntrypoint, WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        @step.do("square")
        def square():
            return event.payload["n"] ** 2

        step.sleep("a pause", "1 second")  # hibernates: no process is held
        return {"squared": square()}
""",
}


async def main():
    config = SupervisorConfig(state_dir=".dynworkers")
    async with (
        Supervisor(config) as supervisor,
        Engine(supervisor) as engine,
    ):  # <state_dir>/engine.db

        def code_for(metadata):
            tenant = metadata["tenant_id"]
            env = {"WORKFLOWS": wrap_workflow_binding({"tenant_id": tenant}, engine=engine)}
            return WorkerCode("main", {"main": SOURCES[tenant]}, env=env)

        async def load_runner(metadata, env, ctx):  # the host decides which code runs
            stub = await supervisor.loader.get(metadata["tenant_id"], lambda: code_for(metadata))
            return stub.get_entrypoint("TenantWorkflow")

        workflows = engine.register(
            "dynamic-workflow", create_dynamic_workflow_entrypoint(load_runner)
        )
        # a tenant whose env holds wrap_workflow_binding({"tenant_id": "acme"}) calls
        # self.env.WORKFLOWS.create(params=...) from its fetch handler; the host can create too:
        instance = await workflows.create(
            params={"__dispatcherMetadata": {"tenant_id": "acme"}, "params": {"n": 3}}
        )
        status = await instance.status()
        while status["status"] not in ("complete", "errored", "terminated"):
            await asyncio.sleep(0.1)
            status = await instance.status()
        print(status)  # {"status": "complete", "output": {"squared": 9}, "error": None, ...}


asyncio.run(main())
