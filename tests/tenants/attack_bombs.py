"""Attack class: resource bombs (memory, CPU, recursion, result size) that must end in a typed
error for this tenant, never in the host's or another tenant's distress."""

BOMBS = """
from workers import Response, WorkerEntrypoint


def recurse(n):
    return recurse(n + 1) + 1


class Default(WorkerEntrypoint):
    def big_string(self):
        return len("x" * 10 ** 10)

    def grow_list(self):
        chunks = []
        while True:
            chunks.append("y" * (16 * 1024 * 1024))

    def spin(self):
        while True:
            pass

    def recursion(self):
        return recurse(0)

    def huge_result(self, size):
        return "z" * size

    def ping(self):
        return "pong"


class Huge(WorkerEntrypoint):
    def fetch(self, request):
        return Response("z" * int(request.text()))
"""

#: Module top level never finishes: the tenant cannot even be specialised.
IMPORT_SPIN = """
from workers import WorkerEntrypoint

while True:
    pass


class Default(WorkerEntrypoint):
    def ping(self):
        return "pong"
"""

#: Trusted code only: the sandbox process kills itself.
SELF_KILL = """
import os
import signal

from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)

    def ping(self):
        return "pong"
"""
