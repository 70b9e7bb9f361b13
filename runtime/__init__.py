"""runtime: zygote, spares, LRU pool, wire protocol, bindings, Supervisor.

The names below are imported lazily (PEP 562): a sandbox imports `runtime.protocol` and
`runtime.sandbox.*` through this package, and must not pay for the host side's modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # embedding
    "Supervisor": "dynworkers.runtime.supervisor",
    "SupervisorConfig": "dynworkers.runtime.supervisor",
    "BlockingSupervisor": "dynworkers.runtime.blocking",
    # bindings
    "KVBinding": "dynworkers.runtime.bindings",
    "ServiceBinding": "dynworkers.runtime.bindings",
    "ServiceContext": "dynworkers.runtime.bindings",
    "OutboundRequest": "dynworkers.runtime.bindings",
    "OutboundResponse": "dynworkers.runtime.bindings",
    # errors
    "DynworkersError": "dynworkers.runtime.errors",
    "TenantError": "dynworkers.runtime.errors",
    "EntrypointNotFound": "dynworkers.runtime.errors",
    "ResultError": "dynworkers.runtime.errors",
    "SpecialiseError": "dynworkers.runtime.errors",
    "SandboxError": "dynworkers.runtime.errors",
    "SandboxTimeout": "dynworkers.runtime.errors",
    "SandboxCrashed": "dynworkers.runtime.errors",
    "MemoryLimitExceeded": "dynworkers.runtime.errors",
    "ProtocolError": "dynworkers.runtime.errors",
    "BootError": "dynworkers.runtime.errors",
    "PoolBusy": "dynworkers.runtime.errors",
    "SupervisorClosed": "dynworkers.runtime.errors",
    "CapabilityError": "dynworkers.runtime.errors",
    "BindingRateLimited": "dynworkers.runtime.errors",
    "StateDirInUse": "dynworkers.runtime.errors",
    "StateDirUnusable": "dynworkers.runtime.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
