"""runtime: zygote, spares, LRU pool, wire protocol, bindings, Supervisor.

The names below are imported lazily (PEP 562): a sandbox imports `runtime.protocol` and
`runtime.sandbox.*` through this package, and must not pay for the host side's modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # embedding
    "Supervisor": "runtime.supervisor",
    "SupervisorConfig": "runtime.supervisor",
    "BlockingSupervisor": "runtime.blocking",
    # bindings
    "KVBinding": "runtime.bindings",
    "ServiceBinding": "runtime.bindings",
    "ServiceContext": "runtime.bindings",
    "OutboundRequest": "runtime.bindings",
    "OutboundResponse": "runtime.bindings",
    # errors
    "DynworkersError": "runtime.errors",
    "TenantError": "runtime.errors",
    "EntrypointNotFound": "runtime.errors",
    "ResultError": "runtime.errors",
    "SpecialiseError": "runtime.errors",
    "SandboxError": "runtime.errors",
    "SandboxTimeout": "runtime.errors",
    "SandboxCrashed": "runtime.errors",
    "ProtocolError": "runtime.errors",
    "BootError": "runtime.errors",
    "PoolBusy": "runtime.errors",
    "SupervisorClosed": "runtime.errors",
    "CapabilityError": "runtime.errors",
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
