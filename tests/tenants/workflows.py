"""Tenant workflows used by the engine tests. Each runs inside a real sandbox.

Step bodies that must prove "ran exactly once" count their runs in the tenant's KV through
`env.KV` (a binding), which lives on the host and survives evictions of the sandbox.
"""

#: The design document's example: a fetch handler that starts a workflow, and the workflow.
PIPELINE = """
from workers import WorkerEntrypoint, WorkflowEntrypoint, Response, NonRetryableError


def bump(env, key):
    n = (env.KV.get(key) or 0) + 1
    env.KV.put(key, n)
    return n


class Default(WorkerEntrypoint):
    def fetch(self, request):
        body = request.json() if request.body else {}
        instance = self.env.WORKFLOWS.create(id=body.get("id"), params=body.get("params"))
        return Response.json({"id": instance.id})

    def status(self, instance_id):
        return self.env.WORKFLOWS.get(instance_id).status()

    def approve(self, instance_id, payload):
        self.env.WORKFLOWS.get(instance_id).send_event("approval", payload)
        return True

    def get_other(self, instance_id):
        return self.env.WORKFLOWS.get(instance_id).id


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        n = event.payload["n"]
        total = step.do("sum", lambda: bump(self.env, "runs:sum") and sum(range(n)))

        @step.do("double")
        def double():
            bump(self.env, "runs:double")
            return total * 2

        doubled = double()
        if event.payload.get("nap"):
            step.sleep("nap", event.payload["nap"])
        if event.payload.get("approval"):
            approval = step.wait_for_event("approve", "approval", timeout="1 hour")
            return {"total": total, "doubled": doubled, "approved": approval.payload}
        return {"total": total, "doubled": doubled, "id": event.instance_id}
"""

#: Steps that fail: a flaky one that succeeds on its third attempt, a non-retryable one.
FLAKY = """
from workers import WorkflowEntrypoint, NonRetryableError, StepError


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        mode = event.payload["mode"]
        if mode == "flaky":
            def flaky():
                n = (self.env.KV.get("attempts") or 0) + 1
                self.env.KV.put("attempts", n)
                if n < 3:
                    raise ValueError("not yet, attempt " + str(n))
                return n
            config = {"retries": {"limit": 5, "delay": "1 second", "backoff": "exponential"}}
            return step.do("flaky", flaky, config)
        if mode == "fatal":
            def fatal():
                self.env.KV.put("fatal", (self.env.KV.get("fatal") or 0) + 1)
                raise NonRetryableError("card declined")
            return step.do("fatal", fatal)
        if mode == "exhaust":
            def always():
                raise ValueError("down")
            return step.do("always", always, {"retries": {"limit": 2, "delay": 100,
                                                          "backoff": "constant"}})
        if mode == "caught":
            try:
                step.do("fatal", lambda: (_ for _ in ()).throw(NonRetryableError("no")))
            except StepError as error:
                return {"caught": error.name, "message": error.message}
        if mode == "nondeterministic":
            flipped = self.env.KV.get("flip") is not None
            self.env.KV.put("flip", 1)
            if flipped:
                step.sleep("first", 10)
            else:
                step.do("first", lambda: 1)
            step.sleep("nap", 1000)
            return "unreachable"
        if mode == "inserted":
            flipped = self.env.KV.get("flip") is not None
            self.env.KV.put("flip", 1)
            def counted(key, value):
                self.env.KV.put(key, (self.env.KV.get(key) or 0) + 1)
                return value
            if flipped:  # a later deploy inserts a step before the recorded one
                new = step.do("inserted", lambda: counted("runs:inserted", "new"))
            else:
                new = None
            old = step.do("a", lambda: counted("runs:a", "recorded"))
            step.sleep("nap", 1000)
            return {"new": new, "old": old}
        if mode == "sleepy":
            for i in range(5):
                step.sleep("nap", 0)
            return step.do("only", lambda: "done")
        if mode == "hang":
            def hang():
                while True:
                    pass
            return step.do("hang", hang, {"timeout": 300, "retries": {"limit": 1, "delay": 10}})
        raise ValueError("unknown mode " + mode)
"""

#: Many small steps, for eviction between steps and crash recovery.
COUNTER = """
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        total = 0
        for i in range(event.payload["steps"]):
            def body(i=i):
                key = "ran:" + event.instance_id + ":" + str(i)
                self.env.KV.put(key, (self.env.KV.get(key) or 0) + 1)
                return i
            total += step.do("step", body)
            if event.payload.get("sleep_each"):
                step.sleep("tick", event.payload["sleep_each"])
        return total
"""

#: A step that blocks on a host-side gate (a service binding), so a test can act while the
#: instance is running.
GATED = """
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        first = step.do("one", lambda: self.env.GATE.wait())
        second = step.do("two", lambda: "second")
        return [first, second]
"""

#: A workflow with more steps than the test engine allows.
MANY_STEPS = """
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        for i in range(event.payload["steps"]):
            step.do("s" + str(i), lambda: i)
        return "done"
"""

#: Version 2 of PIPELINE's workflow, told apart by its output.
PIPELINE_V2 = PIPELINE.replace('"id": event.instance_id}', '"id": event.instance_id, "v": 2}')

#: A tenant that tries to swallow a suspension with a bare except: refused at compile time.
BARE_EXCEPT = """
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        try:
            step.sleep("nap", "1 hour")
        except:
            pass
        return "swallowed"
"""

#: Echoes its payload; its fetch creates with no params; binding misuse reports the error's name.
ECHO = """
from workers import WorkerEntrypoint, WorkflowEntrypoint, Response


def message_of(call):
    try:
        call()
    except Exception as error:
        return str(error)
    return None


class Default(WorkerEntrypoint):
    def fetch(self, request):
        body = request.json()
        return Response.json({"id": self.env.WORKFLOWS.create(id=body["id"]).id})

    def get_bad(self):
        return message_of(lambda: self.env.WORKFLOWS.get("../../etc"))

    def delete_bad(self):
        return message_of(lambda: self.env.WORKFLOWS.get("a b").delete())

    def empty_batch(self):
        return message_of(lambda: self.env.WORKFLOWS.create_batch([]))

    def delete_both(self):
        return self.env.WORKFLOWS.delete_batch(["one", "two"])


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        return event.payload
"""

#: Cloudflare's 2026 workflow features: step context, a delay function, rollbacks, a DAG and
#: child workflows. Mode by payload; every step body and rollback counts its runs in KV.
FEATURES = """
from workers import WorkflowEntrypoint, NonRetryableError, StepError


def bump(env, key):
    n = (env.KV.get(key) or 0) + 1
    env.KV.put(key, n)
    return n


def log(env, line):
    env.KV.put("log", (env.KV.get("log") or []) + [line])


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        mode = event["payload"]["mode"]
        env = self.env
        if mode == "context":
            def flaky(ctx):
                log(env, [ctx.attempt, ctx.step.name, ctx.step.count, ctx.config["timeout"]])
                if ctx.attempt < 3:
                    raise ValueError("attempt " + str(ctx.attempt))
                return ctx.attempt
            config = {"retries": {"limit": 5, "delay": lambda attempt: attempt * 1000}}
            first = step.do("flaky", flaky, config)
            again = step.do("flaky", lambda ctx: ctx.step.count)
            return {"attempts": first, "second_count": again, "id": event["instanceId"]}
        if mode in ("saga", "saga-terminate"):
            def undo(name):
                def rollback(value):
                    if name == "b" and bump(env, "undo-tries:b") == 1:
                        raise ValueError("the refund service is down")
                    log(env, "undo " + name + " " + str(value))
                return rollback
            for name in ("a", "b", "c"):
                step.do(name, lambda name=name: bump(env, "runs:" + name) and name.upper(),
                        rollback=undo(name))
            if mode == "saga-terminate":
                step.wait_for_event("hold", "never", timeout="1 hour")
            step.do("charge", lambda: (_ for _ in ()).throw(NonRetryableError("card declined")))
            return "unreachable"
        if mode == "dag":
            @step.do("a")
            def a():
                bump(env, "runs:a")
                return 2

            @step.do("b")
            def b():
                bump(env, "runs:b")
                return 3

            @step.do("c", depends=[a, b], concurrent=True)
            def c(ra, rb):
                bump(env, "runs:c")
                return ra * rb

            total = c()
            step.sleep("nap", 1000)
            return {"c": total, "a_again": a()}
        if mode == "parent":
            kid = step.start_child("kid", {"mode": "child", "fail": event.payload["fail"]})
            try:
                return {"child": step.wait_for_child("wait kid", kid)}
            except StepError as error:
                return {"caught": error.name, "message": error.message}
        if mode == "child":
            if event.payload["fail"]:
                step.do("boom", lambda: (_ for _ in ()).throw(NonRetryableError("kid failed")))
            return step.do("work", lambda: "kid done")
        if mode == "holder":
            step.start_child("kid", {"mode": "sleeper"})
            step.wait_for_event("hold", "never", timeout="1 hour")
        if mode == "sleeper":
            step.sleep("long", "1 hour")
        return None
"""

#: What the history shows: a flaky step (two failed attempts), a sensitive step, a sleep, a wait
#: and an event; its fetch reads its own instance's history through the tenant's binding.
STORY = """
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class Default(WorkerEntrypoint):
    def fetch(self, request):
        return Response.json(self.env.WORKFLOWS.get(request.url.split("/")[-1]).history())


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        def flaky(ctx):
            if ctx.attempt < 3:
                raise ConnectionError("the registry timed out")
            return "built"
        step.do("build", flaky, {"retries": {"limit": 3, "delay": 1000, "backoff": "constant"}})
        def secret(ctx):
            if ctx.attempt < 2:
                raise ValueError("token abc123 rejected")
            return "s3cr3t"
        step.do("token", secret, {"sensitive": True, "retries": {"limit": 1, "delay": 10}})
        step.sleep("cool down", "1 minute")
        approval = step.wait_for_event("approve", "approval", timeout="1 hour")
        return approval.payload
"""
