"""The claims of wake-ups that start together, made in one store transaction.

Host side, on the engine's event loop; plain data, no locks. A wake-up's first act is to claim
its instance (`Store.claim`: the fence that keeps two hosts, or a terminated instance, from
running it) and to read its recorded steps. The scheduler starts wake-ups in bursts: timers
that fall due together, a batch of creates, the slots that one group commit frees. Claimed one
by one, each costs a store round trip of its own (a future, a hand-over to the writer thread
and back, a savepoint, and a second round trip to the reader for the steps), and at thousands
of wake-ups a second those round trips are most of the engine's own work.

`ClaimBatcher.claim(id)` queues the claim and returns a future. A sender task sends the queued
claims to `Store.claim_batch` (at most `MAX_BATCH` per call): one write operation that claims
each and reads the steps of those it claimed, in the transaction of the claim. One batch is in
the store at a time; claims asked meanwhile gather for the next, so batches grow with the load
(as a group commit's do). Nothing waits for a batch to fill: an idle batcher sends a lone claim
one loop turn after it was asked (after the other wake-ups started in the same turn join it).

Failures: a store failure fails every claim of its batch with that `StoreError` (each wake-up
backs off as it would for a claim of its own); a missing instance is `InstanceNotFound` to its
wake-up alone; a wake-up cancelled while its claim is in flight leaves the claim to the store
(as a lone claim would: the next start's recovery finds the instance).
"""

from __future__ import annotations

import asyncio
import contextlib

from dynworkers.engine.scheduler import Clock
from dynworkers.engine.store import Claim, InstanceNotFound, Store, StoreError

#: Most claims in one store call: bounds the writer's transaction (and the time one batch
#: holds the writer thread) when tens of thousands of timers fall due at once.
MAX_BATCH = 256


class ClaimBatcher:
    """Claims for `host`, gathered into `Store.claim_batch` calls, one in the store at a time."""

    def __init__(self, store: Store, host: str, clock: Clock) -> None:
        self.store = store
        self.host = host
        self.clock = clock
        self._pending: list[tuple[str, asyncio.Future[Claim]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        #: store calls made and claims sent, since start (claims / batches: the batching)
        self.batches = 0
        self.claims = 0
        self.largest = 0

    def claim(self, instance_id: str) -> asyncio.Future[Claim]:
        """The instance's claim for this host, with its steps when claimed:
        `(record, claimed, steps)`; `InstanceNotFound` when it does not exist."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Claim] = loop.create_future()
        self._pending.append((instance_id, future))
        if self._sender is None:
            # its first step runs after every callback already scheduled in this turn (the
            # other wake-ups the scheduler started with this one), so those join the batch
            self._sender = loop.create_task(self._send())
        return future

    async def _send(self) -> None:
        """Send the queued claims, one batch in the store at a time: claims asked while a
        batch is in the store gather for the next (as a group commit gathers writes)."""
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._claim(batch)
        finally:
            self._sender = None
            if self._pending and not self._closed:  # cancelled with claims queued behind
                self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _claim(self, batch: list[tuple[str, asyncio.Future[Claim]]]) -> None:
        self.batches += 1
        self.claims += len(batch)
        self.largest = max(self.largest, len(batch))
        ids = [instance_id for instance_id, _ in batch]
        try:
            claims = await self.store.claim_batch(ids, self.host, self.clock.now())
            if len(claims) != len(batch):
                raise StoreError(
                    f"claim_batch answered {len(claims)} claims for {len(batch)} instances: "
                    "the store backend is broken"
                )
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # every wake-up of the batch backs off and runs again
            # anything but a StoreError (a backend bug) would end its wake-ups unrescheduled
            error = exc if isinstance(exc, StoreError) else StoreError(f"claim failed: {exc!r}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (instance_id, future), claim in zip(batch, claims, strict=True):
            if future.done():
                continue  # its wake-up was cancelled meanwhile
            if claim[0] is None:
                future.set_exception(InstanceNotFound(f"no workflow instance {instance_id!r}"))
            else:
                future.set_result(claim)

    async def close(self) -> None:
        """Cancel the claims queued or in flight (the engine is closing; their wake-ups are
        cancelled with the scheduler)."""
        self._closed = True
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        sender = self._sender
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
