"""Attack: control-flow exceptions. Tenant code may not raise, catch or swallow BaseException,
SystemExit, KeyboardInterrupt or GeneratorExit; where it gets them anyway (trusted code), they
end only its own sandbox, and every other tenant keeps being served."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import CompileError
from dynworkers.runtime import SandboxCrashed, Supervisor, TenantError
from dynworkers.sandbox_policy import Policy
from tests.runtime.support import evictions, load
from tests.tenants import attack_baseexception, basic

CONTROL_FLOW = ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException"]


async def _bystander_works(sup: Supervisor) -> None:
    other = await load(sup, "bystander", basic.GREETER)
    assert await other.get_entrypoint("Greeter").ping() == "pong"


@pytest.mark.parametrize("name", CONTROL_FLOW)
def test_control_flow_exceptions_are_not_reachable_by_name(
    config: Callable[..., Any], name: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "raiser", attack_baseexception.RAISE_BY_NAME)
            await stub.get_entrypoint().ping()
            pid = sup.sandbox_pid("raiser")
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().raise_name(name)
            assert caught.value.type_name == "NameError"
            assert name in caught.value.message
            assert sup.sandbox_pid("raiser") == pid  # an ordinary error: the sandbox serves on
            assert await stub.get_entrypoint().ping() == "pong"
            await _bystander_works(sup)

    asyncio.run(main())


def test_except_base_exception_is_a_name_error(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "catcher", attack_baseexception.RAISE_BY_NAME)
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().catch_base()
            assert caught.value.type_name == "NameError"
            await _bystander_works(sup)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (attack_baseexception.BARE_EXCEPT, "bare 'except:'"),
        (attack_baseexception.RETURN_IN_FINALLY, "finally"),
    ],
    ids=["bare-except", "return-in-finally"],
)
def test_constructs_that_swallow_control_flow_do_not_compile(
    config: Callable[..., Any], source: str, match: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            with pytest.raises(CompileError, match=match):
                await load(sup, "swallower", source)
            await _bystander_works(sup)

    asyncio.run(main())


def test_generator_exit_passes_through_except_exception(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "gens", attack_baseexception.GENERATORS)
            await stub.get_entrypoint().ping()
            pid = sup.sandbox_pid("gens")
            assert await stub.get_entrypoint().close_stubborn() == "closed"
            assert await stub.get_entrypoint().leave_suspended() == "left"
            assert await stub.get_entrypoint().ping() == "pong"
            assert sup.sandbox_pid("gens") == pid

    asyncio.run(main())


@pytest.mark.parametrize(
    ("method", "type_name"),
    [("close_yields_in_finally", "RuntimeError"), ("throw_stop", "RuntimeError")],  # PEP 479
)
def test_generator_close_and_throw_tricks_are_ordinary_tenant_errors(
    config: Callable[..., Any], method: str, type_name: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "gens", attack_baseexception.GENERATORS)
            await stub.get_entrypoint().ping()
            pid = sup.sandbox_pid("gens")
            with pytest.raises(TenantError) as caught:
                await getattr(stub.get_entrypoint(), method)()
            assert caught.value.type_name == type_name
            assert sup.sandbox_pid("gens") == pid
            assert await stub.get_entrypoint().ping() == "pong"
            await _bystander_works(sup)

    asyncio.run(main())


@pytest.mark.parametrize("name", CONTROL_FLOW)
def test_control_flow_raised_by_trusted_code_ends_only_its_sandbox(
    config: Callable[..., Any], name: str
) -> None:
    async def main() -> None:
        async with Supervisor(config(policy=Policy.trusted())) as sup:
            bystander = await load(sup, "bystander", attack_baseexception.TRUSTED_RAISE)
            await bystander.get_entrypoint().ping()
            bystander_pid = sup.sandbox_pid("bystander")
            stub = await load(sup, "raiser", attack_baseexception.TRUSTED_RAISE)
            await stub.get_entrypoint().ping()
            with pytest.raises(SandboxCrashed) as caught:
                await stub.get_entrypoint().raise_name(name)
            assert caught.value.tenant_id == "raiser"
            assert evictions(sup, "crash") == 1
            assert await bystander.get_entrypoint().ping() == "pong"
            assert sup.sandbox_pid("bystander") == bystander_pid
            assert await stub.get_entrypoint().ping() == "pong"  # rehydrated

    asyncio.run(main())
