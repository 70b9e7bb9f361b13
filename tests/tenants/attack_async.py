"""Attack programs in async form, run in real sandboxes: loops that never end, sleeps past the
deadline, and reaching the bridge behind an awaited binding call."""

ASYNC_BOMBS = """
import asyncio
from workers import WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def ping(self):
        await asyncio.sleep(0)
        return "pong"

    async def spin(self):
        while True:
            await asyncio.sleep(0)

    async def nap(self):
        await asyncio.sleep(3600)

    async def spin_in_tasks(self):
        async def forever(n):
            while True:
                await asyncio.sleep(0)
        await asyncio.gather(*[forever(i) for i in range(50)])

    async def reach_bridge(self):
        pending = self.env.KV.get("k")
        found = []
        for name in ("bridge", "socket", "pending", "set_result", "cr_frame"):
            try:
                found.append(getattr(pending, name))
            except AttributeError:
                pass
        for name in ("call", "get"):
            try:
                found.append(getattr(getattr(self.env.KV, name), "func_globals"))
            except AttributeError:
                pass
        await pending
        return len(found)
"""

#: An async workflow that tries to swallow its own suspension, in every async construct.
SWALLOWING_WORKFLOW = """
import asyncio
from workers import WorkerEntrypoint, WorkflowEntrypoint, Response

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        instance = await self.env.WORKFLOWS.create(id="w", params={})
        return Response.json({"id": instance.id})

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        escaped = []
        try:
            await step.sleep("first", "1 second")
        except Exception:
            escaped.append("except")
        results = await asyncio.gather(step.sleep("second", "1 second"), return_exceptions=True)
        escaped.extend(str(r) for r in results if r is not None)
        try:
            await asyncio.wait_for(step.sleep("third", "1 second"), 5)
        except Exception:
            escaped.append("wait_for")
        return {"escaped": escaped}
"""
