"""engine: durable workflows: instances, steps, replay, timers, events, dynamic dispatch, stores.

The names below are imported lazily (PEP 562): every sandbox imports `engine.replay` and
`engine.tenant_api` (the step object and the workflow binding tenants see) and must not pay for
the host side's modules (the store, the scheduler, sqlite3).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # embedding
    "Engine": "engine.engine",
    "Workflow": "engine.instances",
    "Instance": "engine.instances",
    "WorkflowEntrypoint": "engine.replay",
    "NonRetryableError": "engine.replay",
    "Clock": "engine.scheduler",
    "ManualClock": "engine.scheduler",
    # dynamic dispatch
    "wrap_workflow_binding": "engine.dispatch",
    "create_dynamic_workflow_entrypoint": "engine.dispatch",
    "dispatch_workflow": "engine.dispatch",
    "WorkflowContext": "engine.dispatch",
    # stores
    "Store": "engine.store",
    "open_store": "engine.store",
    "EventRecord": "engine.store",
    "InstanceRecord": "engine.store",
    "StepRecord": "engine.store",
    # errors
    "EngineError": "engine.errors",
    "StoreError": "engine.store",
    "InstanceExists": "engine.store",
    "InstanceNotFound": "engine.store",
    "InvalidInput": "engine.errors",
    "InvalidTransition": "engine.errors",
    "UnknownWorkflow": "engine.errors",
    "MissingDispatcherMetadataError": "engine.errors",
    "EngineClosed": "engine.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
