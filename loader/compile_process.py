"""Compiling large tenant modules in a separate process, so that the host's loop keeps serving.

Host side. The loader compiles in a worker thread, but CPython's parser and compiler hold the
GIL for the whole of one C call: a 200 KB module held it for about 100 ms at a time, and every
other tenant's requests on the host's event loop waited that long. A module of at least
`PROCESS_BYTES` bytes is therefore compiled in a helper process (one, started on first need
with "spawn", never forked from the threaded host); smaller ones, which hold the GIL for less
than a loop turn's worth, stay in the thread (a process round trip would cost them more than
it saves). The worker thread waits for the helper with the GIL released.

The helper runs only the policy compiler on source text and returns marshalled code or the
problems found; it holds no state. `close()` stops it (the supervisor does at its close); a
helper that died is replaced on the next compile, and the compile that hit its death runs in
the thread instead (slower for the loop, never lost).
"""

from __future__ import annotations

import marshal
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from dynworkers.sandbox_policy import Policy, SourceRejected
from dynworkers.sandbox_policy.compiler import compile_module

#: modules of at least this many bytes of source compile in the helper process
PROCESS_BYTES = 16_384
Problems = list[tuple[str, int | None, str]]


def compile_here(source: str, filename: str, policy: Policy) -> bytes:
    """Compile in the calling thread: marshalled code, or SourceRejected."""
    return marshal.dumps(compile_module(source, filename, policy))


def _in_helper(source: str, filename: str, policy: Policy) -> tuple[bytes | None, Problems]:
    # SourceRejected does not survive pickling with its problems: return them as data
    try:
        return compile_here(source, filename, policy), []
    except SourceRejected as rejected:
        return None, list(rejected.problems)


class CompileProcess:
    """The helper process, started on first need; `compile` is called from worker threads."""

    def __init__(self, threshold: int = PROCESS_BYTES) -> None:
        self.threshold = threshold
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.compiles = 0  # modules compiled in the helper

    def compile(self, source: str, filename: str, policy: Policy) -> bytes:
        if len(source) < self.threshold:
            return compile_here(source, filename, policy)
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("spawn")
                self._executor = ProcessPoolExecutor(1, mp_context=context)
            executor = self._executor
        try:
            blob, problems = executor.submit(_in_helper, source, filename, policy).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:
                    self._executor = None
            return compile_here(source, filename, policy)
        self.compiles += 1
        if blob is None:
            raise SourceRejected(problems)
        return blob

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
