"""The hot paths, per tenant per minute: wake-ups cold and warm, boot latency, time from due to
running, evictions by reason.

Host side, on the engine's event loop. Figures are summed in memory (count and total per tenant,
minute and name) and added to the store's running sums every few seconds and at close, so that
history survives a restart; recent latencies are also kept in bounded windows for percentiles.
A flush that fails keeps its rows for the next one.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

from dynworkers.engine.store import Store

#: names recorded; evictions are "evict.<reason>"
WAKE_COLD, WAKE_WARM, BOOT_MS, DUE_TO_RUNNING_MS = (
    "wake.cold",
    "wake.warm",
    "boot_ms",
    "due_to_running_ms",
)


def _percentiles(samples: deque[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {"p50": ordered[round(0.5 * last)], "p99": ordered[round(0.99 * last)]}


class HotPath:
    def __init__(self) -> None:
        self._pending: dict[tuple[str, int, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.due_to_running_ms: deque[float] = deque(maxlen=10_000)
        self.boot_ms: deque[float] = deque(maxlen=10_000)

    def add(self, tenant: str, name: str, value: float, now: float) -> None:
        cell = self._pending[(tenant, int(now // 60), name)]
        cell[0] += 1
        cell[1] += value

    def wake(self, tenant: str, cold: bool, due_ms: float, now: float) -> None:
        self.add(tenant, WAKE_COLD if cold else WAKE_WARM, 1.0, now)
        self.add(tenant, DUE_TO_RUNNING_MS, due_ms, now)
        self.due_to_running_ms.append(due_ms)

    def observe(self, event: str, tenant: str, value: float, now: float) -> None:
        """What the supervisor's pool reports: "boot" (seconds) or "evict:<reason>"."""
        if event == "boot":
            self.add(tenant, BOOT_MS, value * 1000, now)
            self.boot_ms.append(value * 1000)
        elif event.startswith("evict:"):
            self.add(tenant, "evict." + event.removeprefix("evict:"), 1.0, now)

    async def flush(self, store: Store) -> None:
        if not self._pending:
            return
        rows = [(t, m, n, c, s) for (t, m, n), (c, s) in self._pending.items()]
        self._pending = defaultdict(lambda: [0.0, 0.0])
        try:
            await store.add_metrics(rows)
        except Exception:
            for tenant, minute, name, count, total in rows:  # keep them for the next flush
                cell = self._pending[(tenant, minute, name)]
                cell[0] += count
                cell[1] += total
            raise

    async def history(self, store: Store, since_minute: int = 0) -> list[dict[str, Any]]:
        """Durable rows plus those not flushed yet: one dict per tenant, minute and name."""
        sums: dict[tuple[str, int, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for tenant, minute, name, count, total in await store.metrics(since_minute):
            sums[(tenant, minute, name)] = [count, total]
        for key, (count, total) in self._pending.items():
            if key[1] >= since_minute:
                sums[key][0] += count
                sums[key][1] += total
        return [
            {"tenant": t, "minute": m, "name": n, "count": c, "total": s}
            for (t, m, n), (c, s) in sorted(sums.items(), key=lambda item: (item[0][1], item[0]))
        ]

    def snapshot(self) -> dict[str, Any]:
        return {
            "due_to_running_ms": _percentiles(self.due_to_running_ms),
            "boot_ms": _percentiles(self.boot_ms),
        }
