"""Attack class: a tenant past the language layer (the trusted preset: plain Python, `os` and
`open`) reads what the host holds: its environment variables, the state directory (another
tenant's KV values in the database or its WAL), the host's working directory, /home, /root.
The defence: a minimal environment, a private state directory, and Landlock reads limited to
the interpreter, its standard library and the packages the zygote imported."""

TRUSTED_READER = """
import os

from workers import WorkerEntrypoint


def _try(action):
    try:
        return ["ok", action()]
    except OSError as exc:
        return ["denied", type(exc).__name__]


class Default(WorkerEntrypoint):
    def environment(self):
        return {
            "environ": dict(os.environ),
            "proc": _try(lambda: open("/proc/self/environ", "rb").read().decode("latin-1")),
        }

    def read(self, path):
        return _try(lambda: len(open(path, "rb").read()))

    def listdir(self, path):
        return _try(lambda: sorted(os.listdir(path)))

    def stdlib_file(self):
        return os.__file__
"""

KV_WRITER = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def store(self, value):
        self.env.KV.put("card", value)
        return self.env.KV.get("card")
"""
