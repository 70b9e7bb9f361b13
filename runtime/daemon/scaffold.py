"""`dynworkers init NAME`: a tenant directory to start from.

Host side, in the CLI's main thread. Writes `NAME/main.py` (a fetch handler that counts visits
in `env.KV`, and a `TenantWorkflow` with a step and a sleep, so that both the front door and
`dynworkers workflows create NAME` work at once) and `NAME/wrangler.jsonc` (`name`, `main`,
`compatibility_date`, and the `KV` and `WORKFLOWS` bindings the main module uses, as
Cloudflare's tooling writes it). The directory is deployed as it is: put it under the code directory
(`dynworkers serve --tenants <parent>`) or `dynworkers tenants put NAME NAME/`.

Fails with exit status 2 and one line: a NAME that is not a tenant id, or a directory that
exists and is not empty (nothing is overwritten).
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from dynworkers.runtime.daemon.deployments import InvalidTenant, check_tenant_id

MAIN = '''"""Tenant {name}: a dynworkers worker.

GET / counts visits in env.KV; POST / starts a workflow instance with the request's JSON body
as its params, GET /<id> says how it is doing.
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class Default(WorkerEntrypoint):
    def fetch(self, request):
        path = request.url.split("://", 1)[-1].partition("/")[2]
        if request.method == "POST":
            params = request.json() if request.body else {{}}
            instance = self.env.WORKFLOWS.create(params=params)
            return Response.json({{"id": instance.id}}, status=201)
        if path:
            return Response.json(self.env.WORKFLOWS.get(path).status())
        visits = (self.env.KV.get("visits") or 0) + 1
        self.env.KV.put("visits", visits)
        return Response.json({{"tenant": "{name}", "visits": visits}})


class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        @step.do("greet")
        def greet():
            return "hello, " + str(event.payload.get("who", "world"))

        step.sleep("a short nap", "1 second")
        return {{"greeting": greet()}}
'''

WRANGLER = """{{
  // read by dynworkers (serve and dev) and by Cloudflare's tooling alike
  "name": "{name}",
  "main": "main.py",
  "compatibility_date": "{date}",
  "kv_namespaces": [{{"binding": "KV"}}],
  "workflows": [{{"binding": "WORKFLOWS", "name": "{name}", "class_name": "TenantWorkflow"}}]
}}
"""


def init(name: str, parent: Path) -> int:
    """Write the tenant directory `parent/name`; the exit status."""
    try:
        check_tenant_id(name)
    except InvalidTenant as exc:
        print(f"dynworkers: init: {exc}", file=sys.stderr)
        return 2
    folder = parent / name
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        print(
            f"dynworkers: init: {folder} exists and is not empty; pick another NAME or --dir",
            file=sys.stderr,
        )
        return 2
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "main.py").write_text(MAIN.format(name=name))
        (folder / "wrangler.jsonc").write_text(WRANGLER.format(name=name, date=today))
    except OSError as exc:
        print(f"dynworkers: init: cannot write {folder}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"created {folder}/ (main.py, wrangler.jsonc). Next:")
    print(f"  dynworkers serve --tenants {parent}      # serves it at /{name}/")
    print(f"  dynworkers tenants put {name} {folder}   # or deploy it to a running daemon")
    return 0
