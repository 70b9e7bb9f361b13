"""engine: durable workflows (in progress).

So far: the store interface and its SQLite backend with group commit. The engine itself
(instances, replay, timers, events, dynamic dispatch) builds on these.
"""

from engine.store import (
    EventRecord,
    InstanceExists,
    InstanceNotFound,
    InstanceRecord,
    StepRecord,
    Store,
    StoreError,
    open_store,
)

__all__ = [
    # stores
    "Store",
    "open_store",
    # records
    "EventRecord",
    "InstanceRecord",
    "StepRecord",
    # errors
    "InstanceExists",
    "InstanceNotFound",
    "StoreError",
]
