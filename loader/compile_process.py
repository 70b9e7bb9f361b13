"""Compiling large tenant modules in a separate process, so that the host's loop keeps serving.

Host side. The loader compiles in a worker thread, but CPython's parser and compiler hold the
GIL for the whole of one C call: a 200 KB module held it for about 100 ms at a time, and every
other tenant's requests on the host's event loop waited that long. A module of at least
`PROCESS_BYTES` bytes is therefore compiled in a helper process (one, started on first need
with "spawn", never forked from the threaded host); smaller ones, which hold the GIL for less
than a loop turn's worth, stay in the thread (a process round trip would cost them more than
it saves). The worker thread waits for the helper with the GIL released.

The helper runs only the policy compiler on source text and returns marshalled code or the
problems found, with the module's imports for the deploy-time import check (`loader.imports`,
which would otherwise parse the module again in the host); `scan` parses in the helper alone,
for a module whose code came from the compile cache. The helper holds no state. `close()`
stops it (the supervisor does at its close); a helper that died is replaced on the next
compile, and the compile that hit its death runs in the thread instead (slower for the loop,
never lost).
"""

from __future__ import annotations

import marshal
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from dynworkers.loader.imports import Imports, remember, scan
from dynworkers.sandbox_policy import Policy, SourceRejected
from dynworkers.sandbox_policy.compiler import compile_module

#: modules of at least this many bytes of source compile in the helper process
PROCESS_BYTES = 16_384
Problems = list[tuple[str, int | None, str]]
T = TypeVar("T")


def compile_here(source: str, filename: str, policy: Policy) -> bytes:
    """Compile in the calling thread: marshalled code, or SourceRejected."""
    return marshal.dumps(compile_module(source, filename, policy))


def _in_helper(
    source: str, filename: str, policy: Policy
) -> tuple[bytes | None, Problems, Imports]:
    # SourceRejected does not survive pickling with its problems: return them as data
    found = scan(source)
    try:
        return compile_here(source, filename, policy), [], found
    except SourceRejected as rejected:
        return None, list(rejected.problems), found


class CompileProcess:
    """The helper process, started on first need; `compile` is called from worker threads."""

    def __init__(self, threshold: int = PROCESS_BYTES) -> None:
        self.threshold = threshold
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.compiles = 0  # modules compiled in the helper
        self.scans = 0  # modules whose imports alone were parsed in the helper

    def compile(self, source: str, filename: str, policy: Policy) -> bytes:
        if len(source) < self.threshold:
            return compile_here(source, filename, policy)
        answer = self._run(_in_helper, source, filename, policy)
        if answer is None:
            return compile_here(source, filename, policy)
        blob, problems, found = answer
        remember(source, policy.version, found)
        self.compiles += 1
        if blob is None:
            raise SourceRejected(problems)
        return blob

    def scan(self, source: str) -> Imports:
        """A module's imports (`loader.imports.scan`), parsed in the helper when it is large."""
        if len(source) < self.threshold:
            return scan(source)
        found = self._run(scan, source)
        if found is None:
            return scan(source)
        self.scans += 1
        return found

    def _run(self, function: Callable[..., T], *args: Any) -> T | None:
        """`function(*args)` in the helper; None when the helper died (the caller runs it here)."""
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("spawn")
                self._executor = ProcessPoolExecutor(1, mp_context=context)
            executor = self._executor
        try:
            return executor.submit(function, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:
                    self._executor = None
            return None

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
