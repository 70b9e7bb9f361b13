"""Errors the engine raises to its host-side callers.

Host side only. Each names the instance or workflow and says what to do. The tree::

    EngineError(Exception)
    ├── StoreError                          the store failed (engine.store)
    │   ├── InstanceNotFound(LookupError)   no instance with that id (for this tenant)
    │   └── InstanceExists(ValueError)      an instance with that id exists
    ├── InvalidInput(ValueError)            bad id, step name, event type, oversized payload
    ├── InvalidTransition(ValueError)       e.g. an event for a finished instance
    ├── UnknownWorkflow(LookupError)        no workflow registered under that name
    ├── MissingDispatcherMetadataError      a dynamic workflow's params lack the envelope
    └── EngineClosed                        the engine is not running

Errors from inside a workflow (`NonRetryableError`, `StepError`, `NonDeterminismError`) are the
tenant's; they reach the host as the instance's `error` (`name`, `message`), never raised here.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every engine error."""


class InvalidInput(EngineError, ValueError):
    """The caller passed something the engine refuses; nothing was written."""


class InvalidTransition(EngineError, ValueError):
    """The instance's status does not allow that operation; the message says which it is."""


class UnknownWorkflow(EngineError, LookupError):
    """No workflow is registered under that name: call `engine.register(name, entrypoint)`."""


class MissingDispatcherMetadataError(EngineError):
    """A dynamic workflow woke without `__dispatcherMetadata` in its params: it was created
    directly instead of through a binding from `wrap_workflow_binding`."""


class EngineClosed(EngineError):
    """The engine is closed or not started: use `async with Engine(...)`."""
