"""Tenant programs served by the daemon tests (tests/runtime/daemon/test_serve*.py)."""

ECHO = """
import json
from workers import Response, console

def fetch(request, env, ctx):
    console.log("echo", request.method, request.url)
    return Response.json({
        "method": request.method,
        "url": request.url,
        "body": request.text(),
        "test_header": request.headers.get("x-test"),
        "prefix": request.headers.get("x-forwarded-prefix"),
    })
"""

BOOM = """
from workers import Response

def explode(depth):
    if depth == 0:
        raise ValueError("boom from tenant code")
    return explode(depth - 1)

def fetch(request, env, ctx):
    return explode(2)
"""

#: /spin never answers (past the deadline: 504); /busy computes for a second and a half, then
#: answers (a request in flight during a graceful shutdown); anything else answers at once.
SPIN = """
import time
from workers import Response

def fetch(request, env, ctx):
    if request.url.endswith("/spin"):
        while True:
            pass
    if request.url.endswith("/busy"):
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pass
        return Response("done after a while")
    return Response("ok")
"""

#: Two problems on two lines: the compile error lists both, with module and line.
BROKEN = """
from workers import Response

_hidden = 1

def fetch(request, env, ctx):
    return Response(request.__class__)
"""

#: A workflow that naps, then waits for "go"; fetch creates instances.
NAPPER = """
from workers import Response, WorkflowEntrypoint, console

class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        first = step.do("first", lambda: event.payload["n"] + 1)
        step.sleep("nap", event.payload.get("nap", "1 second"))
        console.log("woke up after the nap")
        if event.payload.get("wait"):
            go = step.wait_for_event("go", "go", timeout="1 hour")
            return {"first": first, "go": go.payload}
        return {"first": first}

def fetch(request, env, ctx):
    params = request.json() if request.method == "POST" else {"n": 1}
    instance = env.WORKFLOWS.create(params=params)
    return Response.json({"id": instance.id})
"""

VERSION_ONE = """
from workers import Response

def fetch(request, env, ctx):
    return Response("version one")
"""

VERSION_TWO = VERSION_ONE.replace("version one", "version two")
