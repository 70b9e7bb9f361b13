"""Child workflows, host side: starting a child from a parent's step, and telling the parent when
the child ends.

Host side, on the engine's event loop; used by the engine and its step sessions, given only the
store, the scheduler and the clock. A child is an instance of its parent's workflow, with the
parent's dispatch envelope (so it runs the same tenant's code) and `parent` set. Its id is the
parent's step id made unique and stable (`<parent>-<hash of step name and occurrence>`), unless
the tenant gave one, so a replayed `start_child` finds the child it started before.

When a child ends (complete, errored, terminated), `finished` buffers an event of type
`__child__:<child id>` for its parent, holding `{"status", "output", "error"}`, which the
parent's `step.wait_for_child` waits for (so a child that ends before its parent waits is never
missed). The rule for terminate: terminating a parent terminates every unfinished child, and
theirs, depth first; a child's own end never ends its parent.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import msgspec

from dynworkers.engine import rules
from dynworkers.engine.dispatch import ENVELOPE_KEY, envelope
from dynworkers.engine.errors import InvalidInput, InvalidTransition
from dynworkers.engine.replay import CHILD_EVENT
from dynworkers.engine.scheduler import Clock, Scheduler
from dynworkers.engine.store import InstanceNotFound, InstanceRecord, Store

log = logging.getLogger("dynworkers.engine")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class Children:
    def __init__(self, store: Store, scheduler: Scheduler, clock: Clock) -> None:
        self.store = store
        self.scheduler = scheduler
        self.clock = clock

    async def start(
        self, parent: InstanceRecord, name: str, occurrence: int, params: bytes, given: Any
    ) -> str:
        """Create the child (once) and queue it; its id as the parent's tenant sees it."""
        # the child lives beside its parent: the same tenant, the same workflow namespace
        parent_local = rules.local_id(parent.id, parent.tenant)
        prefix = parent.id[: len(parent.id) - len(parent_local)]
        if given is None:
            digest = hashlib.sha256(f"{parent.id}\0{name}\0{occurrence}".encode()).hexdigest()
            local = f"{parent_local[:60]}-{digest[:16]}"
        else:
            try:
                local = rules.check_instance_id(given)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
        payload = _decode(params)
        wrapped = _decode(parent.params)
        if isinstance(wrapped, dict) and ENVELOPE_KEY in wrapped:  # the same tenant's code
            payload = envelope(wrapped[ENVELOPE_KEY], payload)
        data = rules.check_size(_encode(payload), "the child's params")
        now = self.clock.now()
        child = InstanceRecord(
            f"{prefix}{local}",
            parent.workflow,
            "queued",
            data,
            now,
            now,
            parent.tenant,
            parent=parent.id,
        )
        if await self.store.create_instances([child]):
            self.scheduler.ready(child.id, child.tenant, due=now)
        return local

    async def finished(
        self, record: InstanceRecord, status: str, output: Any = None, error: Any = None
    ) -> bool:
        """Tell `record`'s parent (if any) that it ended; True if that woke the parent."""
        if record.parent is None:
            return False
        local = rules.local_id(record.id, record.tenant)
        data = _encode({"status": status, "output": output, "error": error})
        now = self.clock.now()
        try:
            woke = await self.store.deliver_event(
                record.parent, CHILD_EVENT + local, data, now, now
            )
        except (InstanceNotFound, InvalidTransition):
            return False  # the parent was deleted or has ended: nobody waits
        if woke:
            parent_tenant = rules.tenant_of(record.parent)
            self.scheduler.ready(record.parent, parent_tenant)
            await self.store.notify(f"wake {record.parent} {parent_tenant or ''}")
        return woke

    async def unfinished(self, parent: str) -> list[str]:
        return await self.store.children(parent)
