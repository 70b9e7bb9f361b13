"""pipeline: a CI pipeline as a durable workflow, started and steered over HTTP.

Routes (served by `dynworkers serve --tenants examples/tenants` under /pipeline/):

    POST /pipeline/                start a run; optional body {"commit": "abc123"}
    GET  /pipeline/<id>            the run's status, output and error
    POST /pipeline/<id>/approve    approve the deploy; optional body {"by": "alice"}

The run checks out, builds (the build fails once and is retried), tests, waits out a short deploy
window, then waits for a human to approve before it deploys. Every `step.do` result is recorded,
so when the instance wakes up (after the retry delay, the sleep, the approval) `run()` starts
from the top and finished steps return their recorded result without running again. While it
sleeps or waits, the instance holds no process at all.

An approval sent early (during the build or the deploy window) is kept until the workflow asks
for it. Nobody approving within an hour ends the run without a deploy.
"""

from workers import (
    BindingError,
    Response,
    WaitTimeout,
    WorkerEntrypoint,
    WorkflowEntrypoint,
    console,
)

#: The build is flaky: retry it up to 3 times, one second apart (constant backoff).
BUILD_RETRIES = {"retries": {"limit": 3, "delay": "1 second", "backoff": "constant"}}


def route(url):
    """The path segments of a URL: "http://host/abc/approve?x=1" -> ["abc", "approve"]."""
    path = url.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    return [part for part in path.split("/")[1:] if part]


def origin(url):
    """The scheme and host of a URL: "http://127.0.0.1:8787/abc" -> "http://127.0.0.1:8787"."""
    scheme, rest = url.split("://", 1)
    return scheme + "://" + rest.split("/", 1)[0]


def body_of(request):
    """The request's JSON body as a dict ({} when there is none)."""
    if not request.body:
        return {}
    data = request.json()  # a body that is not JSON raises ValueError: see fetch
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


class Default(WorkerEntrypoint):
    def fetch(self, request):
        parts = route(request.url)
        try:
            if request.method == "POST" and parts == []:
                return self.start(request)
            if request.method == "GET" and len(parts) == 1:
                return self.status(parts[0])
            if request.method == "POST" and len(parts) == 2 and parts[1] == "approve":
                return self.approve(parts[0], request)
        except ValueError as error:  # a body that is not a JSON object
            return Response.json({"error": str(error)}, status=400)
        except BindingError as error:  # e.g. no instance with that id
            return Response.json({"error": str(error)}, status=404)
        path = "/" + "/".join(parts)
        return Response.json({"error": f"no route {request.method} {path}"}, status=404)

    def start(self, request):
        commit = body_of(request).get("commit", "HEAD")
        instance = self.env.WORKFLOWS.create(params={"commit": commit})
        # The daemon strips its mount ("/pipeline") before calling fetch, so the routes here see
        # "/", "/<id>", ...; X-Forwarded-Prefix says where it mounted us, for links.
        mount = request.headers.get("x-forwarded-prefix") or ""
        base = origin(request.url) + mount + "/" + instance.id
        console.log(f"pipeline {instance.id} started for commit {commit}")
        return Response.json(
            {"id": instance.id, "status_url": base, "approve_url": base + "/approve"},
            status=201,
        )

    def status(self, instance_id):
        status = self.env.WORKFLOWS.get(instance_id).status()
        return Response.json({"id": instance_id, **status})

    def approve(self, instance_id, request):
        by = body_of(request).get("by", "anonymous")
        self.env.WORKFLOWS.get(instance_id).send_event("approval", {"by": by})
        return Response.json({"id": instance_id, "approved_by": by}, status=202)


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        run_id = event.instance_id
        commit = event.payload["commit"]

        # The function form: step.do(name, fn). The lambda's result is recorded.
        checkout = step.do("checkout", lambda: self.checkout(run_id, commit))

        # The decorator form, with a retry policy. The body raises on its first attempt; the
        # instance hibernates for the retry delay and the next wake-up runs the body again.
        @step.do("build", config=BUILD_RETRIES)
        def build():
            key = "build-attempts:" + run_id  # KV outlives the sandbox: a durable counter
            attempt = (self.env.KV.get(key) or 0) + 1
            self.env.KV.put(key, attempt)
            if attempt == 1:
                console.warn(f"[{run_id}] build attempt 1 failed: runner lost its cache")
                raise RuntimeError("runner lost its cache")
            console.log(f"[{run_id}] build attempt {attempt} succeeded")
            return {"artifact": "app-" + checkout["commit"] + ".whl", "attempts": attempt}

        built = build()

        @step.do("test")
        def test():
            console.log(f"[{run_id}] 42 tests passed")
            return {"passed": 42, "failed": 0}

        tests = test()

        # Hibernate: no process is held while the instance sleeps.
        step.sleep("deploy window", "2 seconds")

        try:
            approval = step.wait_for_event("approval", "approval", timeout="1 hour")
        except WaitTimeout:
            return {"commit": commit, "deployed": False, "reason": "not approved within 1 hour"}
        approver = approval.payload["by"]

        @step.do("deploy")
        def deploy():
            console.log(f"[{run_id}] deploying {built['artifact']}, approved by {approver}")
            return {"environment": "production", "artifact": built["artifact"]}

        deployed = deploy()
        return {
            "commit": commit,
            "deployed": True,
            "approved_by": approver,
            "build": built,
            "tests": tests,
            "deploy": deployed,
        }

    def checkout(self, run_id, commit):
        console.log(f"[{run_id}] checking out {commit}")
        return {"commit": commit, "files": 128}
