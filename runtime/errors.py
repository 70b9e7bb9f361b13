"""Errors the runtime raises to its caller.

Host side only. Every error here says which tenant and what to do. The tree::

    DynworkersError(Exception)
    ├── TenantError                          tenant code raised; carries its own traceback lines
    │   ├── EntrypointNotFound(LookupError)  no such entrypoint class or method
    │   ├── ResultError(ValueError)          the result is not plain data, or over budget
    │   └── SpecialiseError                  the tenant's modules failed at import time
    ├── SandboxError                         the sandbox, not the tenant's logic, failed
    │   ├── SandboxTimeout(TimeoutError)     past its deadline: killed, next call rehydrates
    │   ├── MemoryLimitExceeded(MemoryError) over its memory ceiling during a call: killed
    │   ├── SandboxCrashed                   the process died (broken)
    │   ├── ProtocolError                    it sent a frame that does not decode: ended
    │   └── BootError                        a spare could not be started
    ├── PoolBusy(TimeoutError)               every sandbox is busy and capacity is reached (busy)
    ├── SupervisorClosed                     the supervisor is shut or shutting down (closed)
    ├── StateDirInUse                        another owner holds the state directory (names its pid)
    ├── StateDirUnusable(OSError)            the state directory is read-only, full or unreachable
    ├── CapabilityError(PermissionError)     a binding call outside the sandbox's capabilities
    └── BindingRateLimited                   a tenant's binding calls exceeded its rate (busy)

`CompileError` belongs to the loader (`loader.CompileError`).
"""

from __future__ import annotations


class DynworkersError(Exception):
    """Base of every runtime error."""


class TenantError(DynworkersError):
    """Tenant code raised. `traceback` holds the tenant's frames only, never the host's."""

    def __init__(
        self, tenant_id: str, type_name: str, message: str, traceback: list[str] | None = None
    ) -> None:
        self.tenant_id = tenant_id
        self.type_name = type_name
        self.message = message
        self.traceback = list(traceback or [])
        super().__init__(f"tenant {tenant_id!r} raised {type_name}: {message}")

    def __str__(self) -> str:
        head = super().__str__()
        return head + ("\n" + "\n".join(self.traceback) if self.traceback else "")


class EntrypointNotFound(TenantError, LookupError):
    """The worker has no such entrypoint or method."""


class ResultError(TenantError, ValueError):
    """The result could not cross the boundary as plain data within the budget."""


class SpecialiseError(TenantError):
    """The tenant's modules raised while being imported in a fresh sandbox."""


class SandboxError(DynworkersError):
    """`reason` is the pool's eviction reason (crash, deadline, memory, manual, ...)."""

    def __init__(self, tenant_id: str | None, message: str, reason: str | None = None) -> None:
        self.tenant_id = tenant_id
        self.reason = reason
        super().__init__(message)


class SandboxTimeout(SandboxError, TimeoutError):
    """The invocation passed its deadline; its sandbox was killed; the next call rehydrates."""


class SandboxCrashed(SandboxError):
    """The sandbox process died; `reason` is its decoded exit status."""


class ProtocolError(SandboxError):
    """The sandbox sent a frame that does not decode; it was ended."""


class BootError(SandboxError):
    """A sandbox could not be started (zygote gone, handshake failed or timed out)."""


class PoolBusy(DynworkersError, TimeoutError):
    """Every sandbox is busy and the pool is at max_sandboxes; retry, or raise the capacity."""


class SupervisorClosed(DynworkersError):
    """The supervisor is closed or closing; no new work is accepted."""


class CapabilityError(DynworkersError, PermissionError):
    """A sandbox asked for a binding or method it was not granted."""


class MemoryLimitExceeded(SandboxError, MemoryError):
    """The sandbox went over its memory ceiling while a call ran; it was killed and the next
    call starts a fresh one. `limit_bytes` is the ceiling, `used_bytes` what was seen."""

    def __init__(self, tenant_id: str | None, message: str, limit_bytes: int, used_bytes: int):
        super().__init__(tenant_id, message, "memory")
        self.limit_bytes = limit_bytes
        self.used_bytes = used_bytes


class BindingRateLimited(DynworkersError):
    """A tenant made binding calls faster than `SupervisorConfig.binding_calls_per_second`.

    Raised on the host side only as the error reply's source; the tenant sees
    `workers.RateLimited`."""


class StateDirInUse(DynworkersError):
    """Another process (or another Supervisor in this one) owns the state directory."""


class StateDirUnusable(DynworkersError, OSError):
    """The state directory cannot be created or written (read-only, full, failing disk)."""
