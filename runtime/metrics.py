"""Counters and latency windows for the pool, read by `Supervisor.stats()`.

Host side, on the supervisor's event loop; plain Python numbers, no locks. Latencies are kept in
bounded windows (the most recent samples), so percentiles describe recent behaviour and memory
stays flat under churn.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: (event, tenant, value): "boot" with the boot latency in seconds, "ready.warm" with the seconds a
#: warm call waited for its sandbox and its turn, or "evict:<reason>" with 1.
Observer = Callable[[str, str, float], None]

EVICTION_REASONS = (
    "capacity",
    "idle",
    "memory",
    "deadline",
    "crash",
    "protocol",
    "shutdown",
    "redeploy",
    "specialise",
    "manual",
    "aborted",
)


def percentiles(
    samples: deque[float] | list[float], points: tuple[float, ...] = (50, 90, 99)
) -> dict[str, float]:
    if not samples:
        return {f"p{int(p)}": 0.0 for p in points}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {f"p{int(p)}": ordered[min(last, round(p / 100 * last))] for p in points}


@dataclass
class PoolMetrics:
    cold: int = 0
    warm: int = 0
    rehydrations: int = 0
    boots: int = 0
    boot_failures: int = 0
    #: cold starts of a tenant that already had a live sandbox (a busy tenant scaling out)
    scale_outs: int = 0
    #: calls that found every sandbox their tenant may use busy, and queued for one
    queued: int = 0
    #: sandboxes killed by the memory watch during a call (also counted in evictions["memory"])
    memory_kills: int = 0
    evictions: Counter[str] = field(default_factory=Counter)
    #: seconds from "need a sandbox" to "sandbox ready for this tenant", cold starts only
    boot_latency: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    #: seconds to fork, connect and confine a spare
    spare_boot: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    #: callables told of each cold boot and eviction, per tenant (the engine keeps history)
    observers: list[Observer] = field(default_factory=list)

    def tell(self, event: str, tenant: str | None, value: float) -> None:
        for observer in self.observers:
            observer(event, tenant or "", value)

    def snapshot(self) -> dict[str, object]:
        return {
            "cold": self.cold,
            "warm": self.warm,
            "rehydrations": self.rehydrations,
            "scale_outs": self.scale_outs,
            "queued": self.queued,
            "boots": self.boots,
            "boot_failures": self.boot_failures,
            "memory_kills": self.memory_kills,
            "evictions": {reason: self.evictions.get(reason, 0) for reason in EVICTION_REASONS},
            "boot_latency_ms": {k: v * 1e3 for k, v in percentiles(self.boot_latency).items()},
            "spare_boot_ms": {k: v * 1e3 for k, v in percentiles(self.spare_boot).items()},
        }
