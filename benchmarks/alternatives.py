"""What the same trivial handler costs without dynworkers: the baselines of the dispatch benchmark.

Three ways to run `benchmarks.common.HANDLER_SRC` for a request, each timed from "a request
arrives for a tenant with nothing running" to "its response is in hand":

* `spawn_per_tenant`: a fresh `multiprocessing` process (start method "spawn") per tenant; the
  clock runs from `Process.start()` to the first reply over a `Pipe`. The child execs the
  handler as plain Python with a minimal `workers` shim (no RestrictedPython, no hardening), and
  the parent's `__main__` is hidden from the child while it starts, so the child pays for the
  interpreter and `benchmarks.alternatives` only: every simplification favours this baseline.
* `subprocess_per_request`: `python -c` that runs the handler once and prints the body; the clock
  runs from `subprocess.run` to its exit with the body read.
* `in_process`: RestrictedPython in the host, the lower bound of any isolation. The handler is
  compiled once with `sandbox_policy.compiler.compile_module`; "fresh globals" builds a
  `TenantNamespace` and execs the module per call, "preloaded" only calls the exec'd `fetch`.

Imports only the standard library at module level: the spawn children import this module.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

from dynworkers.benchmarks.common import HANDLER_SRC, URL, summarize

#: Plain-Python stand-in for the `workers` module, then the handler exec'd as module "main".
SHIM = (
    "import sys, types\n"
    "class Response:\n"
    "    def __init__(self, body=None, status=200, headers=None):\n"
    "        self.body = body.encode() if isinstance(body, str) else (body or b'')\n"
    "        self.status, self.headers = status, dict(headers or {})\n"
    "class Request:\n"
    "    def __init__(self, url, method='GET', headers=None, body=b''):\n"
    "        self.url, self.method, self.headers, self.body = url, method, headers or {}, body\n"
    "_workers = types.ModuleType('workers')\n"
    "_workers.Response, _workers.Request = Response, Request\n"
    "sys.modules['workers'] = _workers\n"
    "tenant = {'__name__': 'main'}\n"
    "exec(compile(HANDLER_SRC, 'main.py', 'exec'), tenant)\n"
)

SUBPROCESS_CODE = (
    f"HANDLER_SRC = {HANDLER_SRC!r}\n"
    + SHIM
    + f"r = tenant['fetch'](Request({URL!r}), None, None)\n"
    "sys.stdout.write(r.body.decode())\n"
)


def _spawn_child(conn: Any) -> None:
    """Body of a per-tenant process: load the handler, serve requests until the pipe closes."""
    scope: dict[str, Any] = {"HANDLER_SRC": HANDLER_SRC}
    exec(SHIM, scope)
    fetch, request_cls = scope["tenant"]["fetch"], scope["Request"]
    while True:
        try:
            url = conn.recv()
        except EOFError:
            return
        response = fetch(request_cls(url), None, None)
        conn.send((response.status, response.body))


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """Hide the parent's __main__ so that a spawn child does not re-import it."""
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = saved


def spawn_per_tenant(samples: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    times: list[float] = []
    for _ in range(samples):
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_spawn_child, args=(child,), daemon=True)
        started = time.perf_counter()
        with _bare_main():
            process.start()
        child.close()
        parent.send(URL)
        status, body = parent.recv()
        times.append((time.perf_counter() - started) * 1e3)
        if (status, body) != (200, b"ok"):
            raise RuntimeError(f"spawn child answered {status} {body!r}")
        parent.close()
        process.join(5)
        if process.exitcode is None:
            process.kill()
            process.join()
    return summarize(times) | {"samples_ms": times}


def subprocess_per_request(samples: int) -> dict[str, Any]:
    times: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", SUBPROCESS_CODE], capture_output=True, check=True
        )
        times.append((time.perf_counter() - started) * 1e3)
        if done.stdout != b"ok":
            raise RuntimeError(f"subprocess printed {done.stdout!r} {done.stderr!r}")
    return summarize(times) | {"samples_ms": times}


def in_process(samples: int) -> dict[str, dict[str, Any]]:
    from dynworkers.runtime.sandbox import workers
    from dynworkers.sandbox_policy import Policy
    from dynworkers.sandbox_policy.compiler import compile_module
    from dynworkers.sandbox_policy.namespace import TenantNamespace

    policy = Policy.default()
    code = compile_module(HANDLER_SRC, "main.py", policy)

    def no_fetch(*args: Any, **kwargs: Any) -> workers.Response:
        raise workers.FetchError("the lower-bound handler has no outbound access")

    api = workers.WorkersModule(workers.Console(lambda level, text: None), no_fetch)
    env = workers.Env({})

    def fresh_globals() -> dict[str, Any]:
        namespace = TenantNamespace(
            policy,
            import_tenant_module=lambda name: None,
            api_modules={"workers": api},
            emit_print=lambda text: None,
        )
        scope = namespace.module_globals("main")
        exec(code, scope)
        return scope

    def call(scope: dict[str, Any]) -> None:
        response = scope["fetch"](workers.Request(URL), env, workers.Context(None))
        if response.body != b"ok":
            raise RuntimeError(f"in-process handler answered {response.body!r}")

    fresh: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        call(fresh_globals())
        fresh.append((time.perf_counter() - started) * 1e3)
    scope = fresh_globals()
    preloaded: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        call(scope)
        preloaded.append((time.perf_counter() - started) * 1e3)
    return {"fresh_globals": summarize(fresh), "preloaded": summarize(preloaded)}
