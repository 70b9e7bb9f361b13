"""agent: a plan an AI agent might write, run as a durable workflow.

Routes (served by `dynworkers serve --tenants examples/tenants` under /agent/):

    POST /agent/        start a run; body {"goal": "write a post about durable workflows"}
    GET  /agent/<id>    the run's status, and its output once complete

The plan: research the goal, outline it, draft each section of the outline, review the draft.
Drafting calls a model (`model.py`, a second module of this tenant) that is busy the first two
times it is asked: the first draft step fails, hibernates for its retry delay (no process held),
and succeeds on its third attempt. Steps that already finished do not run again on a wake-up:
their recorded results are replayed.
"""

import model  # model.py, beside this file
from workers import BindingError, Response, WorkerEntrypoint, WorkflowEntrypoint, console

#: Ask the model up to 4 times per step, one second apart.
MODEL_RETRIES = {"retries": {"limit": 3, "delay": "1 second", "backoff": "constant"}}


def route(url):
    """The path segments of a URL: "http://host/abc?x=1" -> ["abc"]."""
    path = url.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    return [part for part in path.split("/")[1:] if part]


class Default(WorkerEntrypoint):
    def fetch(self, request):
        parts = route(request.url)
        if request.method == "POST" and parts == []:
            try:
                goal = request.json()["goal"]
            except (ValueError, KeyError, TypeError):  # no body, not JSON, no "goal"
                goal = None
            if not isinstance(goal, str) or not goal.strip():
                return Response.json({"error": 'send a JSON body {"goal": "..."}'}, status=400)
            instance = self.env.WORKFLOWS.create(params={"goal": goal})
            console.log(f"agent run {instance.id}: {goal}")
            return Response.json({"id": instance.id, "goal": goal}, status=201)
        if request.method == "GET" and len(parts) == 1:
            try:
                status = self.env.WORKFLOWS.get(parts[0]).status()
            except BindingError as error:  # no instance with that id
                return Response.json({"error": str(error)}, status=404)
            return Response.json({"id": parts[0], **status})
        path = "/" + "/".join(parts)
        return Response.json({"error": f"no route {request.method} {path}"}, status=404)


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        run_id = event.instance_id
        goal = event.payload["goal"]

        def research():
            console.log(f"[{run_id}] researching: {goal}")
            return ["what " + goal + " means", "who cares about " + goal, "open questions"]

        notes = step.do("research", research)

        # The outline is recorded, so the loop below sees the same sections on every replay:
        # step names may come from data, as long as the data comes from a step.
        outline = step.do("outline", lambda: ["Introduction", "Details", "Conclusion"])

        sections = []
        for title in outline:

            def draft(title=title):
                prompt = title + " of '" + goal + "', from " + str(len(notes)) + " notes"
                text = model.complete(self.env.KV, run_id, prompt)  # may raise ModelBusy
                console.log(f"[{run_id}] drafted {title}")
                return {"title": title, "text": text}

            sections.append(step.do("draft " + title, draft, MODEL_RETRIES))

        @step.do("review")
        def review():
            words = sum(len(s["text"].split()) for s in sections)
            console.log(f"[{run_id}] review: {len(sections)} sections, {words} words")
            return {"approved": True, "sections": len(sections), "words": words}

        return {"goal": goal, "sections": sections, "review": review()}
