"""Binding calls are rate-limited per tenant: a flood gets `workers.RateLimited` in the tenant,
counted in stats, and other tenants are not slowed by it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.runtime import Supervisor, SupervisorConfig
from dynworkers.runtime.bindings import BindingRateLimit
from dynworkers.sandbox_policy import PolicyError
from tests.runtime.support import load
from tests.tenants import attack_flood

CALLS = 5000
BURST = 200


def test_a_binding_call_flood_is_refused_with_rate_limited(config: Callable[..., Any]) -> None:
    async def main() -> None:
        cfg = config(binding_calls_per_second=10.0, binding_call_burst=BURST)
        async with Supervisor(cfg) as sup:
            env = {"KV": sup.kv("data")}
            flooder = await load(sup, "flooder", attack_flood.FLOOD, env=env)
            result = await flooder.get_entrypoint().flood(CALLS)
            assert result["refused"] is not None, "5000 calls went through unthrottled"
            assert (
                "'flooder'" in result["refused"] and "binding_calls_per_second" in result["refused"]
            )
            assert result["done"] < CALLS
            assert sup.stats()["bindings"]["rate_limited"] >= 1
            # another tenant has its own bucket
            other = await load(sup, "quiet", attack_flood.FLOOD, env=env)
            assert await other.get_entrypoint().one() is None

    asyncio.run(main())


def test_the_bucket_refills_at_the_rate_and_caps_at_the_burst() -> None:
    now = [0.0]
    limit = BindingRateLimit(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limit.allow("t") for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert [limit.allow("t") for _ in range(2)] == [True, False]
    now[0] += 100.0  # capped at the burst
    assert [limit.allow("t") for _ in range(4)] == [True, True, True, False]
    assert limit.refused == {"t": 3} and limit.refused_total == 3
    assert BindingRateLimit(rate=0, burst=1).allow("t")  # 0: no limit


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(PolicyError, match="binding_calls_per_second"):
        SupervisorConfig(binding_calls_per_second=-1)
