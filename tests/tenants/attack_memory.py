"""Attack class: grow past the memory ceiling during a call (the ceiling used to be checked only
between calls, and a call reached 413 MB). The defence: a watch of busy sandboxes' RSS kills the
sandbox and fails the call with `MemoryLimitExceeded`; RLIMIT_AS is the backstop."""

#: Holds `mib` MiB resident, then spins so that the call is still running when the watch looks.
GROW_AND_HOLD = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def hold(self, mib):
        block = b"x" * (mib * 1024 * 1024)
        n = 0
        while len(block) > 0:
            n += 1
        return n

    def small(self):
        return "ok"
"""
