"""dynworkers: run other people's Python in pre-forked sandboxes, with durable workflows.

`import dynworkers` is the public API for a host that embeds the runtime. Installed, dynworkers is
this one import package: the repository's top-level folders `runtime/`, `loader/`, `engine/`,
`sandbox_policy/` and `benchmarks/` are its subpackages (`dynworkers.runtime`, ...), linked here
so that the tree keeps its shape and nothing generic lands in site-packages.

The names below are imported lazily (PEP 562): a sandbox imports `dynworkers.runtime.sandbox.*`
through this package and must not pay for the host side's modules (aiohttp, sqlite3, the pool).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # embedding: the runtime
    "Supervisor": "dynworkers.runtime",
    "SupervisorConfig": "dynworkers.runtime",
    "BlockingSupervisor": "dynworkers.runtime",
    # tenant code: what a host hands the Worker Loader
    "WorkerCode": "dynworkers.loader",
    "Binding": "dynworkers.loader",
    "Limits": "dynworkers.loader",
    "WorkerStub": "dynworkers.loader",
    # bindings a host grants
    "KVBinding": "dynworkers.runtime",
    "ServiceBinding": "dynworkers.runtime",
    "ServiceContext": "dynworkers.runtime",
    "OutboundRequest": "dynworkers.runtime",
    "OutboundResponse": "dynworkers.runtime",
    # durable workflows
    "Engine": "dynworkers.engine",
    "Workflow": "dynworkers.engine",
    "Instance": "dynworkers.engine",
    "WorkflowEntrypoint": "dynworkers.engine",
    "NonRetryableError": "dynworkers.engine",
    "Clock": "dynworkers.engine",
    "ManualClock": "dynworkers.engine",
    "wrap_workflow_binding": "dynworkers.engine",
    "create_dynamic_workflow_entrypoint": "dynworkers.engine",
    "dispatch_workflow": "dynworkers.engine",
    "WorkflowContext": "dynworkers.engine",
    # policy
    "Policy": "dynworkers.sandbox_policy",
    "OsLimits": "dynworkers.sandbox_policy",
    # the daemon, for a host that runs it in process
    "Daemon": "dynworkers.runtime.daemon",
    "DaemonConfig": "dynworkers.runtime.daemon",
    "ControlClient": "dynworkers.runtime.daemon",
    "AsyncControlClient": "dynworkers.runtime.daemon",
    # errors: one base per package
    "DynworkersError": "dynworkers.runtime",
    "TenantError": "dynworkers.runtime",
    "EntrypointNotFound": "dynworkers.runtime",
    "ResultError": "dynworkers.runtime",
    "SandboxError": "dynworkers.runtime",
    "SandboxTimeout": "dynworkers.runtime",
    "SandboxCrashed": "dynworkers.runtime",
    "PoolBusy": "dynworkers.runtime",
    "SupervisorClosed": "dynworkers.runtime",
    "CapabilityError": "dynworkers.runtime",
    "LoaderError": "dynworkers.loader",
    "CompileError": "dynworkers.loader",
    "InvalidWorkerCode": "dynworkers.loader",
    "EngineError": "dynworkers.engine",
    "StoreError": "dynworkers.engine",
    "InstanceExists": "dynworkers.engine",
    "InstanceNotFound": "dynworkers.engine",
    "InvalidInput": "dynworkers.engine",
    "InvalidTransition": "dynworkers.engine",
    "UnknownWorkflow": "dynworkers.engine",
    "EngineClosed": "dynworkers.engine",
    "PolicyError": "dynworkers.sandbox_policy",
    "ControlError": "dynworkers.runtime.daemon",
}

__all__ = [
    "__version__",
    # embedding: the runtime
    "Supervisor",
    "SupervisorConfig",
    "BlockingSupervisor",
    # tenant code: what a host hands the Worker Loader
    "WorkerCode",
    "Binding",
    "Limits",
    "WorkerStub",
    # bindings a host grants
    "KVBinding",
    "ServiceBinding",
    "ServiceContext",
    "OutboundRequest",
    "OutboundResponse",
    # durable workflows
    "Engine",
    "Workflow",
    "Instance",
    "WorkflowEntrypoint",
    "NonRetryableError",
    "Clock",
    "ManualClock",
    "wrap_workflow_binding",
    "create_dynamic_workflow_entrypoint",
    "dispatch_workflow",
    "WorkflowContext",
    # policy
    "Policy",
    "OsLimits",
    # the daemon, for a host that runs it in process
    "Daemon",
    "DaemonConfig",
    "ControlClient",
    "AsyncControlClient",
    # errors: one base per package
    "DynworkersError",
    "TenantError",
    "EntrypointNotFound",
    "ResultError",
    "SandboxError",
    "SandboxTimeout",
    "SandboxCrashed",
    "PoolBusy",
    "SupervisorClosed",
    "CapabilityError",
    "LoaderError",
    "CompileError",
    "InvalidWorkerCode",
    "EngineError",
    "StoreError",
    "InstanceExists",
    "InstanceNotFound",
    "InvalidInput",
    "InvalidTransition",
    "UnknownWorkflow",
    "EngineClosed",
    "PolicyError",
    "ControlError",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from dynworkers.engine import (
        Clock,
        Engine,
        EngineClosed,
        EngineError,
        Instance,
        InstanceExists,
        InstanceNotFound,
        InvalidInput,
        InvalidTransition,
        ManualClock,
        NonRetryableError,
        StoreError,
        UnknownWorkflow,
        Workflow,
        WorkflowContext,
        WorkflowEntrypoint,
        create_dynamic_workflow_entrypoint,
        dispatch_workflow,
        wrap_workflow_binding,
    )
    from dynworkers.loader import (
        Binding,
        CompileError,
        InvalidWorkerCode,
        Limits,
        LoaderError,
        WorkerCode,
        WorkerStub,
    )
    from dynworkers.runtime import (
        BlockingSupervisor,
        CapabilityError,
        DynworkersError,
        EntrypointNotFound,
        KVBinding,
        OutboundRequest,
        OutboundResponse,
        PoolBusy,
        ResultError,
        SandboxCrashed,
        SandboxError,
        SandboxTimeout,
        ServiceBinding,
        ServiceContext,
        Supervisor,
        SupervisorClosed,
        SupervisorConfig,
        TenantError,
    )
    from dynworkers.runtime.daemon import (
        AsyncControlClient,
        ControlClient,
        ControlError,
        Daemon,
        DaemonConfig,
    )
    from dynworkers.sandbox_policy import OsLimits, Policy, PolicyError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dynworkers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
