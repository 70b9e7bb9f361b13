"""Deadlines and crashes: a stuck or dead sandbox fails only its own calls, is ended with the
reason recorded, and the tenant's next call gets a fresh sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import Limits
from dynworkers.runtime import PoolBusy, SandboxCrashed, SandboxTimeout, SpecialiseError, Supervisor
from dynworkers.sandbox_policy import Policy
from tests.runtime.support import evictions, load
from tests.tenants import attack_bombs, basic

SHORT = Limits(deadline=0.5)


def test_infinite_loop_times_out_and_the_sandbox_is_killed(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "spinner", attack_bombs.BOMBS, limits=SHORT)
            assert await stub.get_entrypoint().ping() == "pong"
            pid = sup.sandbox_pid("spinner")
            with pytest.raises(SandboxTimeout, match="spinner") as caught:
                await stub.get_entrypoint().spin()
            # the worker's own limit applied, not the supervisor's default (read, not timed)
            assert "0.5 s deadline" in str(caught.value)
            assert caught.value.tenant_id == "spinner"
            assert evictions(sup, "deadline") == 1
            assert sup.sandbox_pid("spinner") is None
            assert await stub.get_entrypoint().ping() == "pong"
            assert sup.sandbox_pid("spinner") not in (None, pid)
            assert sup.stats()["rehydrations"] == 1

    asyncio.run(main())


def test_calls_queued_behind_a_stuck_call_fail_and_the_tenant_recovers(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "spinner", attack_bombs.BOMBS, limits=SHORT)
            results = await asyncio.gather(
                stub.get_entrypoint().spin(), stub.get_entrypoint().ping(), return_exceptions=True
            )
            assert isinstance(results[0], SandboxTimeout)
            # The queued ping either ran in the rehydrated sandbox or, having waited its whole
            # deadline for its turn, did not run at all (busy, not broken).
            assert results[1] == "pong" or isinstance(results[1], PoolBusy)
            assert await stub.get_entrypoint().ping() == "pong"

    asyncio.run(main())


def test_deadline_of_one_tenant_does_not_disturb_another(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            spinner = await load(sup, "spinner", attack_bombs.BOMBS, limits=SHORT)
            calm = await load(sup, "calm", basic.CLOCK)
            await calm.get_entrypoint().ping()
            calm_pid = sup.sandbox_pid("calm")
            spin, pong = await asyncio.gather(
                spinner.get_entrypoint().spin(),
                calm.get_entrypoint().ping(),
                return_exceptions=True,
            )
            assert isinstance(spin, SandboxTimeout)
            assert pong == "pong"
            assert sup.sandbox_pid("calm") == calm_pid

    asyncio.run(main())


def test_infinite_loop_at_import_fails_within_the_deadline(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(boot_timeout=2.0)) as sup:
            stub = await load(sup, "stuck", attack_bombs.IMPORT_SPIN, limits=SHORT)
            for _ in range(2):
                with pytest.raises((SandboxTimeout, SpecialiseError)):
                    await stub.get_entrypoint().ping()
                assert sup.sandbox_pid("stuck") is None  # the stuck sandbox is not kept
            other = await load(sup, "other", basic.CLOCK)
            assert await other.get_entrypoint().ping() == "pong"

    asyncio.run(main())


def test_crashed_sandbox_raises_sandbox_crashed_and_the_next_call_works(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(policy=Policy.trusted())) as sup:
            stub = await load(sup, "doomed", attack_bombs.SELF_KILL)
            calm = await load(sup, "calm", attack_bombs.SELF_KILL)
            await calm.get_entrypoint().ping()
            assert await stub.get_entrypoint().ping() == "pong"
            pid = sup.sandbox_pid("doomed")
            with pytest.raises(SandboxCrashed, match="SIGKILL") as caught:
                await stub.get_entrypoint().die()
            assert caught.value.tenant_id == "doomed"
            assert evictions(sup, "crash") == 1
            assert sup.sandbox_pid("doomed") is None
            assert await stub.get_entrypoint().ping() == "pong"
            assert sup.sandbox_pid("doomed") not in (None, pid)
            assert await calm.get_entrypoint().ping() == "pong"

    asyncio.run(main())
