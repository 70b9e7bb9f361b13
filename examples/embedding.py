# examples/embedding.py: a host that embeds the runtime (python3 examples/embedding.py)
import asyncio

from dynworkers import Supervisor, SupervisorConfig, WorkerCode

TENANT = """
from workers import WorkerEntrypoint, Response

class Default(WorkerEntrypoint):
    def fetch(self, request):
        n = (self.env.KV.get("n") or 0) + 1
        self.env.KV.put("n", n)
        return Response.json({"n": n, "path": request.url})

class Greeter(WorkerEntrypoint):
    def greet(self, name):
        return self.ctx.props["greeting"] + ", " + name
"""


async def main():
    config = SupervisorConfig(state_dir=".dynworkers", max_sandboxes=64, spares=2)
    async with Supervisor(config) as supervisor:
        await supervisor.ready()  # the spares have booted: a cold start takes about a millisecond
        kv = supervisor.kv("counters")
        worker = await supervisor.loader.get(
            "acme", lambda: WorkerCode("main", {"main": TENANT}, env={"KV": kv})
        )
        response = await worker.fetch("https://acme.example/hello")
        print(response.status, response.json())
        greeter = worker.get_entrypoint("Greeter", props={"greeting": "hello"})
        print(await greeter.greet("bob"))
        print(supervisor.stats()["boot_latency_ms"])


asyncio.run(main())
