"""Well-behaved tenant workers: fetch handlers, entrypoints, bindings, logging, errors."""

#: A Default fetch handler that echoes the request, and a named entrypoint that reads its props.
GREETER = """
from workers import WorkerEntrypoint, Response


class Default(WorkerEntrypoint):
    def fetch(self, request):
        return Response(
            "method=" + request.method + " body=" + request.text(),
            status=201,
            headers={"X-Echo": request.headers.get("a", "-"), "X-Url": request.url},
        )


class Json(WorkerEntrypoint):
    def fetch(self, request):
        return Response.json({"url": request.url, "n": [1, 2, 3]})


class Greeter(WorkerEntrypoint):
    def greet(self, name):
        return self.env.GREETING + ", " + name + " #" + str(self.ctx.props["x"])

    def ping(self):
        return "pong"

    def echo(self, *args, **kwargs):
        return {"args": list(args), "kwargs": kwargs}
"""

#: The module-level form: `fetch(request, env, ctx)`.
MODULE_FETCH = """
from workers import Response


def fetch(request, env, ctx):
    return Response.json({"greeting": env.GREETING, "path": request.url})
"""

#: A worker whose answer names the version of its source: `VERSION_SOURCE.format(version=...)`.
VERSIONED = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def version(self):
        return "{version}"
"""

#: `main` imports `helpers`, which imports `util`: tenant modules import each other.
MULTI_MODULE = {
    "main": """
import helpers
from util import double
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def compute(self, n):
        return [helpers.triple(n), double(n), helpers.NAME]
""",
    "helpers": """
import util

NAME = "helpers"


def triple(n):
    return util.double(n) + n
""",
    "util": """
def double(n):
    return n * 2
""",
}

#: Plain data from `env` copied in; the tenant may mutate its copy without reaching the host's.
ENV_DATA = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def read(self):
        return {"CONFIG": self.env.CONFIG, "LIMIT": self.env.LIMIT, "FLAG": self.env.FLAG}

    def mutate(self):
        self.env.CONFIG["items"].append(99)
        return self.env.CONFIG
"""

#: Busy-waits (no sleep in the sandbox) and reports when it ran, by the sandbox's clock.
CLOCK = """
import time

from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def busy(self, seconds):
        start = time.time()
        while time.time() - start < seconds:
            pass
        return [start, time.time()]

    def ping(self):
        return "pong"
"""

#: Keeps what it allocates in a module global, so the sandbox's resident memory stays high.
HOARDER = """
from workers import WorkerEntrypoint

HOARD = []


class Default(WorkerEntrypoint):
    def hoard(self, mib):
        HOARD.append("x" * (mib * 1024 * 1024))
        return len(HOARD)

    def ping(self):
        return "pong"
"""

#: Three errors in two modules: policy errors on lines 3 and 6 of main, a syntax error on
#: line 3 of other.
COMPILE_ERRORS = {
    "main": """
from workers import WorkerEntrypoint
x = __import__("os")
class Default(WorkerEntrypoint):
    def fetch(self, request):
        return self._secret
""",
    "other": """
def f():
    return 1 +
""",
}

#: KV, service binding, non-plain arguments and outbound fetch, each reported back as data.
BINDINGS = """
from workers import WorkerEntrypoint, Response, BindingError, FetchError, fetch


class Opaque:
    pass


class Default(WorkerEntrypoint):
    def put(self, key, value):
        return self.env.KV.put(key, value)

    def get(self, key):
        return self.env.KV.get(key)

    def delete(self, key):
        return self.env.KV.delete(key)

    def list(self, prefix):
        return self.env.KV.list(prefix)

    def bad_key(self):
        try:
            self.env.KV.get(123)
        except BindingError as exc:
            return "BindingError: " + str(exc)
        return "no error"

    def opaque_value(self):
        try:
            self.env.KV.put("k", Opaque())
        except TypeError as exc:
            return "TypeError: " + str(exc)
        return "no error"

    def whoami(self, n):
        return self.env.ACCOUNTS.whoami(n)

    def call_service(self, method, *args):
        try:
            return getattr(self.env.ACCOUNTS, method)(*args)
        except BindingError as exc:
            return "BindingError: " + str(exc)

    def put_checked(self, key, value):
        try:
            return self.env.KV.put(key, value)
        except BindingError as exc:
            return "BindingError: " + str(exc)

    def not_offered(self):
        try:
            self.env.ACCOUNTS.drop_all()
        except AttributeError as exc:
            return "AttributeError: " + str(exc)
        return "no error"

    def private_method(self):
        try:
            getattr(self.env.ACCOUNTS, "_secret")()
        except AttributeError as exc:
            return "AttributeError: " + str(exc)
        return "no error"

    def outbound(self, url):
        try:
            response = fetch(url, method="POST", headers={"X-From": "tenant"}, body="ping")
        except FetchError as exc:
            return "FetchError: " + str(exc)
        return [response.status, response.headers, response.text()]
"""

#: Console output: print, console.log and friends, and an output bomb.
LOGGER = """
from workers import WorkerEntrypoint, console


class Default(WorkerEntrypoint):
    def speak(self):
        print("printed", 1)
        console.log("logged", {"a": 1})
        console.error("bad news")
        return "done"

    def shout(self, size):
        print("s" * size)
        return "shouted"

    def flood(self, times):
        for i in range(times):
            print("line", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        return "flooded"
"""

#: Failures of tenant logic: raise deep in a helper, a non-plain result, a non-Response fetch.
FAILING = """
from workers import WorkerEntrypoint


class Thing:
    pass


def inner(n):
    return 10 // n


def outer(n):
    return inner(n) + 1


class Default(WorkerEntrypoint):
    def fetch(self, request):
        return {"not": "a Response"}

    def divide(self, n):
        return outer(n)

    def thing(self):
        return Thing()

    def things(self):
        return {"ok": [1, 2, Thing()]}

    def ping(self):
        return "pong"
"""

#: Module top level raises while being imported in a fresh sandbox.
IMPORT_RAISES = """
from workers import WorkerEntrypoint

SETTINGS = {"a": 1}
VALUE = SETTINGS["missing"]


class Default(WorkerEntrypoint):
    def ping(self):
        return "pong"
"""

#: Catches a host service's errors by the builtin type the host raised, and reports them.
HOST_ERRORS = """
from workers import WorkerEntrypoint, BindingError


class Default(WorkerEntrypoint):
    def catch(self, method):
        try:
            getattr(self.env.ACCOUNTS, method)()
        except KeyError as exc:
            return ["KeyError", str(exc), isinstance(exc, BindingError)]
        except PermissionError as exc:
            return ["PermissionError", str(exc), isinstance(exc, BindingError)]
        except ValueError as exc:
            return ["ValueError", str(exc), isinstance(exc, BindingError)]
        except BindingError as exc:
            return ["BindingError", str(exc), True]
        return "no error"

    def uncaught(self):
        self.env.ACCOUNTS.invalid()
"""
