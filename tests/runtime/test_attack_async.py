"""Attack: async tenant code in real sandboxes. A coroutine that never ends or sleeps past the
deadline is killed with its sandbox like a synchronous loop; an awaited binding call hands the
tenant nothing of the bridge."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import Limits
from dynworkers.runtime import SandboxTimeout, Supervisor
from tests.engine.harness import Harness
from tests.runtime.support import evictions, load
from tests.tenants import attack_async

SHORT = Limits(deadline=0.5)


@pytest.mark.parametrize("method", ["spin", "nap", "spin_in_tasks"])
def test_a_coroutine_past_its_deadline_is_killed_and_the_tenant_recovers(
    config: Callable[..., Any], method: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "async-bomb", attack_async.ASYNC_BOMBS, limits=SHORT)
            entry = stub.get_entrypoint()
            assert await entry.ping() == "pong"
            with pytest.raises(SandboxTimeout, match="async-bomb"):
                await getattr(entry, method)()
            assert evictions(sup, "deadline") == 1
            assert await entry.ping() == "pong"

    asyncio.run(main())


def test_an_awaited_binding_call_exposes_nothing_of_the_bridge(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "prober", attack_async.ASYNC_BOMBS, env={"KV": sup.kv("ns")})
            assert await stub.get_entrypoint().reach_bridge() == 0

    asyncio.run(main())


def test_an_async_workflow_cannot_swallow_its_suspension(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Harness(config()) as harness:
            harness.deploy("swallow", attack_async.SWALLOWING_WORKFLOW)
            await harness.fetch("swallow")
            status = await harness.wait_for("swallow/w", "complete", "errored")
            assert status["output"] == {"escaped": []}, status

    asyncio.run(main())
