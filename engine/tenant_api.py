"""A workflow binding as tenant code sees it: `env.WORKFLOWS.create(...)` and instance handles.

Runs inside a sandbox, in the thread that runs tenant code. Every method is one RPC through the
binding stub the host granted (`kind == "workflow"`); the host scopes every call to the calling
tenant, so ids here are the tenant's own. Inside an `async def` handler every method returns an
awaitable (`await env.WORKFLOWS.create(...)`, `await instance.status()`), in synchronous code the
value itself: the stub decides, and `aio.map_result` carries the wrapping either way.

Failures are the stub's: `BindingError` with the host's
message (unknown instance, bad id, payload over 1 MiB, ...).
"""

from __future__ import annotations

from typing import Any

from dynworkers.sandbox_policy import aio
from dynworkers.sandbox_policy.namespace import register_safe_type


@register_safe_type
class InstanceHandle:
    """One workflow instance: `id`, `status()`, `pause()`, `resume()`,
    `terminate(rollback=False)`, `restart(from_step=None)`, `send_event(type, payload)`,
    `delete()`, `history()`."""

    def __init__(self, stub: Any, instance_id: str) -> None:
        self._stub = stub
        self.id = instance_id

    def status(self) -> Any:
        return self._stub.status(self.id)

    def pause(self) -> Any:
        return self._stub.pause(self.id)

    def resume(self) -> Any:
        return self._stub.resume(self.id)

    def terminate(self, rollback: bool = False) -> Any:
        """Stop it for good; with `rollback`, its recorded steps' rollbacks run first."""
        return self._stub.terminate(self.id, rollback)

    def restart(self, from_step: str | None = None) -> Any:
        return self._stub.restart(self.id, from_step)

    def send_event(self, type: str, payload: Any = None) -> Any:
        return self._stub.send_event(self.id, type, payload)

    def delete(self) -> Any:
        return self._stub.delete(self.id)

    def history(self) -> Any:
        """Its steps with their attempts, and a timeline of what happened."""
        return self._stub.history(self.id)

    def __repr__(self) -> str:
        return f"<workflow instance {self.id}>"


@register_safe_type
class WorkflowBinding:
    """`env.WORKFLOWS`: create instances of the tenant's workflow, and find them again."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def create(self, id: str | None = None, params: Any = None) -> Any:
        return aio.map_result(self._stub.create(id, params), self._handle)

    def _handle(self, instance_id: str) -> InstanceHandle:
        return InstanceHandle(self._stub, instance_id)

    def create_batch(self, instances: list[dict[str, Any]]) -> Any:
        """Each item is `{"id": ..., "params": ...}` (both optional); at most 100. Ids that
        exist are skipped and left out of the result."""
        return aio.map_result(
            self._stub.create_batch(instances), lambda ids: [self._handle(i) for i in ids]
        )

    def get(self, id: str) -> Any:
        return aio.map_result(self._stub.get(id), self._handle)

    def delete_batch(self, ids: list[str]) -> Any:
        """Delete the tenant's instances `ids` (1 to 100); the number deleted."""
        return self._stub.delete_batch(ids)
