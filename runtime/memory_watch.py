"""The memory ceiling of each sandbox: a watch of busy sandboxes, and a check of idle ones.

Host side, on the supervisor's event loop (a task the pool starts). The ceiling
(`SupervisorConfig.memory_limit_mb`, or the worker's `Limits.memory_mb`) applies per sandbox: a
tenant with several sandboxes has the ceiling in each of them.

While a call runs, the ceiling is held by this watch of the resident set of every sandbox with a
call in flight, every `interval` seconds: a sandbox over it is evicted ("memory") and its pending
call fails at once with `MemoryLimitExceeded` naming the ceiling. Between checks a fast
allocation can overshoot; the sandbox's RLIMIT_AS (`OsLimits.memory_bytes`) is the backstop that
no allocation passes (a `MemoryError` in tenant code). The pool's idle sweep checks sandboxes
without a call (`over_ceiling`).

cgroup v2 `memory.max` is not used: it needs a delegated cgroup with the memory controller whose
processes all live in leaves, which the host's own cgroup is not on the machines this runs on (CI
has a v1 memory hierarchy); the RSS watch works everywhere.

Failures: a reading that fails (the process is gone, the host is out of file descriptors) counts
as 0 bytes; a check that raises is logged and the watch goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable

from dynworkers.runtime.errors import MemoryLimitExceeded
from dynworkers.runtime.handle import SandboxHandle
from dynworkers.runtime.metrics import PoolMetrics

log = logging.getLogger("dynworkers.pool")

#: evict(handle, reason, error): the pool's, which ends the sandbox and records why
Evict = Callable[[SandboxHandle, str, MemoryLimitExceeded], None]


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(handle: SandboxHandle) -> int:
    """Resident bytes of the sandbox; 0 when it cannot be read (gone, or out of fds).

    Read from /proc/<pid>/statm (its second field, in pages): one open and one read, where a
    psutil.Process costs three (it reads the start time first), for every sandbox every sweep.
    """
    try:
        with open(f"/proc/{handle.pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def over_ceiling(handle: SandboxHandle) -> bool:
    return bool(handle.memory_limit) and rss(handle) > handle.memory_limit


def check_busy(handles: Iterable[SandboxHandle], metrics: PoolMetrics, evict: Evict) -> None:
    """Evict every sandbox with a call in flight whose RSS is over its ceiling."""
    for handle in list(handles):
        if not handle.alive or not handle.users or not handle.memory_limit:
            continue
        used = rss(handle)
        if used > handle.memory_limit:
            metrics.memory_kills += 1
            limit_mib = handle.memory_limit / (1 << 20)
            error = MemoryLimitExceeded(
                handle.tenant_id,
                f"tenant {handle.tenant_id!r} used {used / (1 << 20):.0f} MiB during a call, "
                f"over its memory ceiling of {limit_mib:g} MiB: its sandbox was killed and the "
                "next call starts a fresh one; use less memory, or raise memory_limit_mb",
                limit_bytes=handle.memory_limit,
                used_bytes=used,
            )
            evict(handle, "memory", error)


async def watch(
    interval: float,
    handles: Callable[[], Iterable[SandboxHandle]],
    metrics: PoolMetrics,
    evict: Evict,
    closed: Callable[[], bool],
) -> None:
    """Check the busy sandboxes every `interval` seconds until `closed()`."""
    while not closed():
        await asyncio.sleep(interval)
        try:
            check_busy(handles(), metrics, evict)
        except Exception:  # the watch outlives any one bad reading (EMFILE, an unreadable /proc)
            log.exception("memory watch: a check failed; trying again in %g s", interval)
