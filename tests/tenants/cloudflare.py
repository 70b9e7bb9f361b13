"""Tenants written as Cloudflare's Python Workers and Python Workflows documentation writes
them: `async def` handlers that `await` their bindings. Each constant is one module's source."""

#: The hello world of Cloudflare's Python Workers documentation, as written there.
HELLO = """
from workers import Response, WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response("Hello world!")
"""

#: The KV example: `await self.env.FOO.put(...)` then `get`.
KV = """
from workers import Response, WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        await self.env.FOO.put("bar", "baz")
        bar = await self.env.FOO.get("bar")
        return Response(bar)
"""

#: A workflow started from fetch and read back with `await instance.status()`, plus the workflow
#: itself with the decorator form of Python Workflows.
WORKFLOW = """
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        if "id" in body:
            instance = await self.env.WORKFLOWS.get(body["id"])
            status = await instance.status()
            return Response.json({"id": instance.id, "details": status})
        instance = await self.env.WORKFLOWS.create(params={"n": body.get("n", 4)})
        return Response.json({"id": instance.id, "details": await instance.status()})

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("sum")
        async def total():
            return sum(range(event.payload["n"]))

        @step.do()
        async def doubled():
            return 2

        result = await total()
        await step.sleep("nap", "1 second")
        factor = await doubled()
        return {"total": result * factor}
"""

#: Handler forms: fetch without a request, module-level on_fetch with two and three arguments.
FETCH_WITHOUT_REQUEST = """
from workers import Response, WorkerEntrypoint

class Default(WorkerEntrypoint):
    def fetch(self):
        return Response("no request needed")
"""

ON_FETCH_TWO = """
from workers import Response

async def on_fetch(request, env):
    return Response(f"{request.method} {env.GREETING}")
"""

ON_FETCH_THREE = """
from workers import Response, fetch

def on_fetch(request, env, ctx):
    return Response.json({"props": ctx.props, "url": request.url})
"""

#: Responses: the defaults of each constructor, redirect, multi-valued headers.
RESPONSES = """
from workers import Response, WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        kind = request.url.rsplit("/", 1)[-1]
        if kind == "text":
            return Response("plain", status=201, headers={"X-Kind": "text"})
        if kind == "html":
            return Response("<b>hi</b>", headers={"Content-Type": "text/html"})
        if kind == "json":
            return Response.json({"ok": True}, status=202)
        if kind == "redirect":
            return Response.redirect("https://example.com/next")
        if kind == "moved":
            return Response.redirect("https://example.com/next", status=301)
        if kind == "bytes":
            return Response(b"raw")
        response = Response("cookies")
        response.headers.append("Set-Cookie", "a=1")
        response.headers.append("Set-Cookie", "b=2")
        response.headers["X-Case"] = "one"
        response.headers.append("x-case", "two")
        return Response.json({
            "get": response.headers.get("X-CASE"),
            "in": "x-Case" in request.headers or "x-case" in response.headers,
            "cookies": response.headers.getSetCookie(),
            "request": request.headers.get("X-Test"),
        })
"""

#: Binding calls gathered in one handler, asyncio.sleep, wait_for and its TimeoutError.
GATHER = """
import asyncio
from workers import Response, WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        await asyncio.gather(*[self.env.KV.put(f"k{i}", i) for i in range(5)])
        values = await asyncio.gather(*[self.env.KV.get(f"k{i}") for i in range(5)])
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(asyncio.sleep(30), timeout=0.01)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        slow = await asyncio.wait_for(self.helper(), 5)
        return Response.json({"values": values, "timed_out": timed_out, "slow": slow})

    async def helper(self):
        await asyncio.sleep(0.001)
        return "helper"
"""

#: Synchronous and asynchronous entrypoint methods side by side over the same binding.
BOTH_STYLES = """
from workers import WorkerEntrypoint

class Default(WorkerEntrypoint):
    def put_sync(self, key, value):
        self.env.KV.put(key, value)
        return self.env.KV.get(key)

    async def put_async(self, key, value):
        await self.env.KV.put(key, value)
        return await self.env.KV.get(key)

    async def not_awaited(self):
        pending = self.env.KV.get("x")
        return repr(pending)

    async def failing(self):
        return await self.env.KV.nothing()
"""

#: The modules such code reaches for, used from an async handler in a real sandbox.
MODULES = """
import asyncio
import base64
import hashlib
import uuid
from dataclasses import dataclass, asdict
from datetime import datetime
from typing import Optional
from urllib.parse import urlparse, parse_qs

from workers import Response, WorkerEntrypoint


@dataclass
class Query:
    path: str
    name: Optional[str] = None


class Default(WorkerEntrypoint):
    async def fetch(self, request) -> Response:
        url = urlparse(request.url)
        params = parse_qs(url.query)
        query = Query(url.path, params.get("name", [None])[0])
        when: datetime = datetime.strptime("2024-05-06 07:08", "%Y-%m-%d %H:%M")
        print("query", query)
        await asyncio.sleep(0)
        return Response.json({
            "query": asdict(query),
            "year": when.year,
            "sha": hashlib.sha256(query.path.encode()).hexdigest()[:8],
            "b64": base64.b64encode(b"hi").decode(),
            "uuid": len(str(uuid.uuid4())),
        })
"""

#: A cron handler as Cloudflare's Python Workers write it; the host calls it on each tick.
SCHEDULED = """
from workers import WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def scheduled(self, controller, env, ctx):
        await env.KV.put("last", [controller.cron, controller.scheduled_time, controller.type])
        return await self.env.ACCOUNTS.whoami(1)
"""

ON_SCHEDULED = """
def on_scheduled(controller, env, ctx):
    env.KV.put("module-level", controller.cron)
"""
