"""The host's handles: a registered `Workflow` and its `Instance`s.

Host side, on the engine's event loop. Handles hold only a name or an id and delegate to the
engine, so they stay valid across wake-ups, evictions and restarts. Errors are the engine's:
`InvalidInput` (bad id, oversized params), `InstanceExists`, `InstanceNotFound`,
`InvalidTransition` (for example an event for a finished instance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dynworkers.engine.engine import Engine


class Instance:
    """One workflow instance. `id` is the engine's id (`<tenant>/<id>` for instances a tenant
    created through its binding)."""

    def __init__(self, engine: Engine, instance_id: str) -> None:
        self._engine = engine
        self.id = instance_id

    async def status(self) -> dict[str, Any]:
        """`{"status": ..., "output": ..., "error": {"name", "message"} or None}`."""
        return await self._engine.status(self.id)

    async def pause(self) -> None:
        """Pause after the current step; a hibernating instance pauses at once."""
        await self._engine.pause(self.id)

    async def resume(self) -> None:
        await self._engine.resume(self.id)

    async def terminate(self, rollback: bool = False) -> None:
        await self._engine.terminate(self.id, rollback)

    async def restart(self, from_step: str | None = None) -> None:
        """Run again from scratch, or from the first step named `from_step`, keeping the
        records of the steps before it."""
        await self._engine.restart(self.id, from_step)

    async def send_event(self, type: str, payload: Any = None) -> None:
        await self._engine.send_event(self.id, type, payload)

    async def delete(self) -> None:
        await self._engine.delete(self.id)

    async def history(self) -> dict[str, Any]:
        """Its steps with their attempts, and a timeline of what happened (engine.history)."""
        return await self._engine.history(self.id)

    def __repr__(self) -> str:
        return f"<Instance {self.id}>"


class Workflow:
    """A registered workflow: `create`, `create_batch`, `get`."""

    def __init__(self, engine: Engine, name: str, entrypoint: Any) -> None:
        self._engine = engine
        self.name = name
        self.entrypoint = entrypoint

    async def create(self, id: str | None = None, params: Any = None) -> Instance:
        (created,) = await self._engine.create(self.name, [(id, params)], strict=True)
        return Instance(self._engine, created)

    async def create_batch(self, items: list[dict[str, Any]]) -> list[Instance]:
        """Each item `{"id": ..., "params": ...}` (both optional), at most 100; ids that exist
        are skipped and left out of the result."""
        pairs = self._engine.batch_items(items)
        created = await self._engine.create(self.name, pairs)
        return [Instance(self._engine, i) for i in created]

    async def get(self, id: str) -> Instance:
        await self._engine.record(id)  # InstanceNotFound if there is none
        return Instance(self._engine, id)

    def __repr__(self) -> str:
        return f"<Workflow {self.name}>"
