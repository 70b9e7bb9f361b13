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
    "Engine": "dynworkers.engine.engine",
    "Workflow": "dynworkers.engine.instances",
    "Instance": "dynworkers.engine.instances",
    "WorkflowEntrypoint": "dynworkers.engine.replay",
    "NonRetryableError": "dynworkers.engine.replay",
    "Clock": "dynworkers.engine.scheduler",
    "ManualClock": "dynworkers.engine.scheduler",
    # dynamic dispatch
    "wrap_workflow_binding": "dynworkers.engine.dispatch",
    "create_dynamic_workflow_entrypoint": "dynworkers.engine.dispatch",
    "dispatch_workflow": "dynworkers.engine.dispatch",
    "WorkflowContext": "dynworkers.engine.dispatch",
    # stores
    "Store": "dynworkers.engine.store",
    "open_store": "dynworkers.engine.store",
    "EventRecord": "dynworkers.engine.store",
    "InstanceRecord": "dynworkers.engine.store",
    "StepRecord": "dynworkers.engine.store",
    # errors
    "EngineError": "dynworkers.engine.errors",
    "StoreError": "dynworkers.engine.store",
    "InstanceExists": "dynworkers.engine.store",
    "InstanceNotFound": "dynworkers.engine.store",
    "InvalidInput": "dynworkers.engine.errors",
    "InvalidTransition": "dynworkers.engine.errors",
    "UnknownWorkflow": "dynworkers.engine.errors",
    "MissingDispatcherMetadataError": "dynworkers.engine.errors",
    "EngineClosed": "dynworkers.engine.errors",
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
