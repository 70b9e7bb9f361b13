"""counter: a hit counter kept in the tenant's KV store.

Routes (served by `dynworkers serve --tenants examples/tenants` under /counter/):

    GET    /counter/    count this hit and return {"tenant": "counter", "hits": n}
    DELETE /counter/    reset the count to zero
    POST   /counter/reset   the same, for clients that cannot send DELETE

`env.KV` is a binding: the store lives in the host, scoped to this tenant, so the count survives
the sandbox being evicted and booted again. Each hit also writes a line to the tenant's log.
"""

from workers import Response, WorkerEntrypoint, console


def path_of(url):
    """The path of a URL without its query: "http://host/reset?x=1" -> "/reset"."""
    rest = url.split("://", 1)[-1]  # drop the scheme
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path.split("?", 1)[0].split("#", 1)[0]


class Default(WorkerEntrypoint):
    def fetch(self, request):
        path = path_of(request.url)
        if path == "/" and request.method == "GET":
            # A tenant's requests run one at a time in its sandbox: this read-then-write is safe.
            hits = (self.env.KV.get("hits") or 0) + 1
            self.env.KV.put("hits", hits)
            console.log(f"hit number {hits}")
            return Response.json({"tenant": "counter", "hits": hits})
        if (path == "/" and request.method == "DELETE") or (
            path == "/reset" and request.method == "POST"
        ):
            self.env.KV.delete("hits")
            console.log("counter reset")
            return Response.json({"tenant": "counter", "hits": 0})
        return Response.json({"error": f"no route {request.method} {path}"}, status=404)
