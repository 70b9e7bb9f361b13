"""Attack: resource bombs. Each ends in a typed error for the tenant that threw it (MemoryError,
RecursionError, a deadline, a ResultError), and the supervisor keeps serving everyone else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import Limits
from dynworkers.runtime import ResultError, SandboxError, SandboxTimeout, Supervisor, TenantError
from dynworkers.sandbox_policy import Policy
from tests.runtime.support import evictions, load
from tests.tenants import attack_bombs, basic


async def _bystander_works(sup: Supervisor) -> None:
    other = await load(sup, "bystander", basic.GREETER)
    assert await other.get_entrypoint("Greeter").ping() == "pong"


@pytest.mark.parametrize("method", ["big_string", "grow_list"])
def test_memory_bomb_is_a_memory_error_for_that_tenant(
    config: Callable[..., Any], method: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "bomber", attack_bombs.BOMBS)
            try:
                await getattr(stub.get_entrypoint(), method)()
            except TenantError as error:
                assert error.type_name == "MemoryError"
            except SandboxError:
                pass  # the kernel may end the process instead; that, too, stays with the tenant
            else:
                pytest.fail("the memory bomb succeeded")
            await _bystander_works(sup)
            assert await stub.get_entrypoint().ping() == "pong"

    asyncio.run(main())


def test_cpu_loop_is_stopped_by_the_deadline(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "bomber", attack_bombs.BOMBS, limits=Limits(deadline=0.5))
            with pytest.raises(SandboxTimeout):
                await stub.get_entrypoint().spin()
            assert evictions(sup, "deadline") == 1
            await _bystander_works(sup)
            assert await stub.get_entrypoint().ping() == "pong"

    asyncio.run(main())


def test_recursion_bomb_is_a_recursion_error(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "bomber", attack_bombs.BOMBS)
            await stub.get_entrypoint().ping()
            pid = sup.sandbox_pid("bomber")
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().recursion()
            assert caught.value.type_name == "RecursionError"
            assert len("\n".join(caught.value.traceback)) < 1_000_000
            assert sup.sandbox_pid("bomber") == pid
            assert await stub.get_entrypoint().ping() == "pong"
            await _bystander_works(sup)

    asyncio.run(main())


def test_result_over_max_result_bytes_is_a_result_error(config: Callable[..., Any]) -> None:
    policy = Policy.default()
    over = policy.max_result_bytes + 1

    async def main() -> None:
        async with Supervisor(config(policy=policy)) as sup:
            stub = await load(sup, "bomber", attack_bombs.BOMBS)
            with pytest.raises(ResultError, match="max_result_bytes"):
                await stub.get_entrypoint().huge_result(over)
            assert await stub.get_entrypoint().ping() == "pong"
            await _bystander_works(sup)

    asyncio.run(main())


async def _huge(sup: Supervisor, how: str, size: int) -> object:
    stub = await load(sup, "bomber", attack_bombs.BOMBS)
    if how == "return":
        return await stub.get_entrypoint().huge_result(size)
    return await stub.get_entrypoint("Huge").fetch("http://x/", method="POST", body=str(size))


@pytest.mark.parametrize("how", ["return", "response"])
def test_result_budget_follows_the_policy(config: Callable[..., Any], how: str) -> None:
    policy = Policy.default().with_limits(max_result_bytes=64 * 1024)

    async def main() -> None:
        async with Supervisor(config(policy=policy)) as sup:
            assert await _huge(sup, how, 1024)  # well under the budget: served
            with pytest.raises(ResultError, match="max_result_bytes"):
                await _huge(sup, how, 65 * 1024)
            await _bystander_works(sup)

    asyncio.run(main())
