"""The memory ceiling holds while a call runs: a sandbox over `memory_limit_mb` is killed and its
call fails at once with `MemoryLimitExceeded` naming the ceiling; the next call rehydrates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.runtime import MemoryLimitExceeded, SandboxError, Supervisor
from tests.runtime.support import evictions, load
from tests.tenants import attack_memory

CEILING_MB = 96


def test_a_call_that_grows_past_the_ceiling_fails_with_memory_limit_exceeded(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        # The deadline is far away: a ceiling checked only between calls shows up as a timeout.
        cfg = config(memory_limit_mb=CEILING_MB, memory_check_interval=0.05, deadline=20.0)
        async with Supervisor(cfg) as sup:
            stub = await load(sup, "grower", attack_memory.GROW_AND_HOLD)
            with pytest.raises(MemoryLimitExceeded) as caught:
                await stub.get_entrypoint().hold(200)
            error = caught.value
            assert isinstance(error, SandboxError) and isinstance(error, MemoryError)
            assert error.tenant_id == "grower" and error.reason == "memory"
            assert f"memory ceiling of {CEILING_MB} MiB" in str(error)
            assert error.limit_bytes == CEILING_MB << 20 and error.used_bytes > error.limit_bytes
            assert evictions(sup, "memory") == 1
            assert sup.stats()["memory_kills"] == 1
            assert await stub.get_entrypoint().small() == "ok"  # rehydrated

    asyncio.run(main())
