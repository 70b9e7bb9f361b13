"""One tenant's sandboxes, and which of them a call gets.

Host side, on the supervisor's event loop; plain Python state owned by the pool, no locks. A
busy tenant runs in several sandboxes at once, as a Cloudflare Worker runs in as many isolates as
its load needs: each sandbox holds the same code (one version of the worker) and runs one call
at a time.

The rule, per tenant (`max_sandboxes_per_tenant` is its cap, bounded by `max_sandboxes`):

1. A call takes an idle sandbox of its tenant, the most recently released one (the others age
   towards the idle TTL and the LRU end).
2. With none idle, it starts another sandbox with the same code while the tenant is under its
   cap: a cold start that the call's Invoke is pipelined behind.
3. At the cap it queues, first come first served, for the tenant's next sandbox that comes free,
   until its deadline (`PoolBusy`: it did not run, its deadline counts from its turn).
4. Two kinds of call share the cap: workflow wake-ups (a call that carries a workflow step
   binding) and requests (fetches and RPC). With a cap of two or more, one kind keeps at most
   `cap - 1` sandboxes busy, so one is always left for the other kind: a wake-up never waits
   behind the tenant's requests alone, nor a request behind its wake-ups (a tenant's fetch can
   pause its own workflow while that workflow's step runs). A queued call always has a call of
   its own kind running ahead of it. With a cap of one the tenant's calls run one at a time.
5. When the pool is full and every sandbox in it is busy, a tenant that already has a sandbox
   queues for its own instead of waiting for room (a tenant with none waits for room: see Pool).

Failures: none of its own. A queued call learns of a sandbox that ended (the tenant is under its
cap again) by being woken with no sandbox; it then looks again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynworkers.runtime.handle import SandboxHandle

#: Kinds of call, each with its own share of the tenant's cap (rule 4).
REQUEST = 0
WAKEUP = 1
#: The `kind` of the binding the engine passes to a workflow's `run`: such a call is a wake-up.
WORKFLOW_STEP_KIND = "step"

#: A queued call: the future of its sandbox (None: look again), and its kind.
Waiter = tuple["asyncio.Future[SandboxHandle | None]", int]


class TenantSandboxes:
    """The sandboxes of one version of one tenant's worker, and the calls waiting for one."""

    __slots__ = (
        "busy",
        "cap",
        "idle",
        "kind_cap",
        "queue",
        "retired",
        "sandboxes",
        "starting",
        "tenant_id",
        "version",
    )

    def __init__(self, tenant_id: str, version: str, cap: int) -> None:
        self.tenant_id = tenant_id
        self.version = version
        self.cap = cap
        #: how many sandboxes one kind of call may keep busy (rule 4)
        self.kind_cap = cap - 1 if cap > 1 else 1
        #: live specialised sandboxes, oldest first
        self.sandboxes: list[SandboxHandle] = []
        #: the free ones among them, most recently released last
        self.idle: list[SandboxHandle] = []
        #: calls holding a sandbox or a cold start under way, by kind
        self.busy = [0, 0]
        #: cold starts under way (their sandboxes are not in `sandboxes` yet)
        self.starting = 0
        self.queue: deque[Waiter] = deque()
        #: replaced by a newer version: its sandboxes end once their calls (and queue) are done
        self.retired = False

    def __repr__(self) -> str:
        return (
            f"<sandboxes of {self.tenant_id!r}: {len(self.sandboxes)} live, "
            f"{len(self.idle)} idle, {self.starting} starting, {len(self.queue)} queued>"
        )

    def take_idle(self, kind: int) -> SandboxHandle | None:
        """An idle sandbox for a call of this kind (rule 1), now held by it; or None."""
        if self.idle and self.busy[kind] < self.kind_cap:
            handle = self.idle.pop()
            self.busy[kind] += 1
            handle.kind = kind
            handle.users = 1
            return handle
        return None

    def may_grow(self, kind: int) -> bool:
        """Whether a call of this kind may start another sandbox (rule 2)."""
        return len(self.sandboxes) + self.starting < self.cap and self.busy[kind] < self.kind_cap

    def hand_over(self, handle: SandboxHandle) -> bool:
        """Give a sandbox that just came free to the first queued call that may take it."""
        queue = self.queue
        for index, (future, kind) in enumerate(queue):
            if future.done() or self.busy[kind] >= self.kind_cap:
                continue
            del queue[index]
            self.busy[kind] += 1
            handle.kind = kind
            handle.users = 1
            future.set_result(handle)
            return True
        while queue and queue[0][0].done():  # callers that gave up
            queue.popleft()
        return False

    def wake_queue(self) -> None:
        """A sandbox ended or a start failed: every queued call looks again (it may start one)."""
        waiters, self.queue = self.queue, deque()
        for future, _ in waiters:
            if not future.done():
                future.set_result(None)

    @property
    def queued(self) -> int:
        return sum(1 for future, _ in self.queue if not future.done())

    @property
    def empty(self) -> bool:
        """Nothing left: no sandbox, no start, no call holding or waiting (the pool forgets it)."""
        return not (self.sandboxes or self.starting or self.busy[0] or self.busy[1] or self.queue)
