"""Attack class: leaving the box (processes, sockets, files, the os and subprocess modules).

Restricted code is stopped by the language layer (no such module, no such builtin). Trusted code
(`Policy.trusted()`, plain Python) is stopped by the OS layer: seccomp kills the process on a
non-AF_UNIX socket or a fork, and the filesystem is read-only for the dropped uid.

Trusted sandboxes run as an unprivileged uid and may not be able to read the stdlib directory to
import a module the zygote did not already import (`socket` is one), so the socket attack uses
`ctypes`, which the zygote imports, to make the raw system call.
"""

#: `RESTRICTED_IMPORT.format(module=...)`: import at call time, report what happened. The
#: `try/except ImportError` hides the import from the deploy-time check (loader.imports), so that
#: the sandbox's own `__import__` is what refuses it.
RESTRICTED_IMPORT = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def attempt(self):
        try:
            import {module}
        except ImportError:
            raise
        return "imported"
"""

#: The same import, plainly: refused when the worker is loaded.
STATIC_IMPORT = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def attempt(self):
        import {module}
        return "imported"
"""

RESTRICTED_MODULES = ("os", "subprocess", "socket", "sys", "ctypes", "posix", "importlib")

#: Builtins that reach the OS are absent (eval/exec/compile are refused at compile time).
RESTRICTED_BUILTINS = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def write_file(self):
        open("/tmp/dynworkers-escape", "w").write("x")
        return "written"

    def ping(self):
        return "pong"
"""

TRUSTED = """
import os
import ctypes

from workers import WorkerEntrypoint

AF_INET = 2
SOCK_STREAM = 1


class Default(WorkerEntrypoint):
    def inet_socket(self):
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.socket(AF_INET, SOCK_STREAM, 0)
        return ["socket returned", fd, ctypes.get_errno()]

    def write_file(self, path):
        with open(path, "w") as handle:
            handle.write("escaped")
        return "written"

    def fork(self):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        return ["forked", pid]

    def ping(self):
        return "pong"
"""
