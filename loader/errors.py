"""Errors of the loader package.

Host side. The tree::

    LoaderError(Exception)
    ├── CompileError(ValueError)      every problem in a worker's source at once, each with
    │                                 module and line; nothing of it was cached or run
    └── InvalidWorkerCode(TypeError)  a WorkerCode that cannot be loaded as given (missing main
                                      module, env value neither plain data nor a binding, ...)
"""

from __future__ import annotations


class LoaderError(Exception):
    """Base of every loader error."""


class CompileError(LoaderError, ValueError):
    """The worker's source was refused. `errors` holds (module, line or None, message) for each."""

    def __init__(self, worker_id: str, errors: list[tuple[str, int | None, str]]) -> None:
        self.worker_id = worker_id
        self.errors = errors
        lines = [
            f"  {module}:{line}: {message}" if line else f"  {module}: {message}"
            for module, line, message in errors
        ]
        super().__init__(
            f"worker {worker_id!r} did not compile ({len(errors)} error(s)); fix these and load "
            "it again:\n" + "\n".join(lines)
        )


class InvalidWorkerCode(LoaderError, TypeError):
    """The WorkerCode itself is malformed; the message names the field."""
