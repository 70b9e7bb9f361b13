"""Attack class: send the host a frame bigger than its channel accepts (a huge error message, a
huge binding call). The defence: the sandbox checks every frame against the frame limit before
sending, caps error messages and tracebacks, and answers with a typed error at once."""

#: The default policy's frame limit is max_result_bytes (8 MiB) plus 1 MiB.
OVER_FRAME = 10 * 1024 * 1024

OVERSIZED = """
from workers import WorkerEntrypoint, PayloadTooLarge


def deep(n, size):
    if n == 0:
        raise ValueError("x" * size)
    return deep(n - 1, size)


class Default(WorkerEntrypoint):
    def huge_error(self, size):
        raise ValueError("x" * size)

    def deep_error(self, depth):
        return deep(depth, 10)

    def huge_binding_call(self, size):
        try:
            self.env.KV.put("k", "x" * size)
        except PayloadTooLarge as exc:
            return str(exc)
        return "sent"

    def small_binding_call(self):
        self.env.KV.put("k", "small")
        return self.env.KV.get("k")
"""

#: A module that raises at import with a message over the frame limit.
OVERSIZED_AT_IMPORT = """
raise ValueError("y" * 10485760)
"""
