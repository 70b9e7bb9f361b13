"""Errors cross the boundary as data: typed on the host, with the tenant's own traceback lines
and never a host frame, and they stay with the tenant that caused them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.runtime import (
    EntrypointNotFound,
    ResultError,
    SpecialiseError,
    Supervisor,
    TenantError,
)
from tests.runtime.support import evictions, load
from tests.tenants import basic

HOST_MARKERS = (
    "/runtime/",
    "/loader/",
    "/sandbox_policy/",
    "site-packages",
    "/lib/python",
    "asyncio",
)


def _assert_tenant_frames_only(error: TenantError) -> None:
    for line in error.traceback:
        for marker in HOST_MARKERS:
            assert marker not in line, f"host frame leaked into the tenant's traceback: {line!r}"
    for line in str(error).splitlines():
        assert "/runtime/" not in line and "site-packages" not in line, line


async def _other_tenant_still_works(sup: Supervisor) -> None:
    other = await load(sup, "bystander", basic.GREETER)
    assert await other.get_entrypoint("Greeter").ping() == "pong"


def test_tenant_error_carries_the_tenants_traceback_and_no_host_frames(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "failing", basic.FAILING)
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().divide(0)
            error = caught.value
            assert type(error) is TenantError
            assert (error.tenant_id, error.type_name) == ("failing", "ZeroDivisionError")
            assert "division" in error.message
            frames = [line.strip() for line in error.traceback if line.strip().startswith("File")]
            assert frames == [
                'File "main.py", line 22, in divide',
                'File "main.py", line 14, in outer',
                'File "main.py", line 10, in inner',
            ]
            assert error.traceback[-1].startswith("ZeroDivisionError")
            _assert_tenant_frames_only(error)
            assert await stub.get_entrypoint().divide(5) == 3  # the same sandbox serves on
            assert evictions(sup, "crash") == 0
            await _other_tenant_still_works(sup)

    asyncio.run(main())


def test_tenant_error_is_not_a_host_builtin_error(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "failing", basic.FAILING)
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().divide(0)
            # The tenant's ZeroDivisionError is described, not re-raised as the host's type.
            assert not isinstance(caught.value, ZeroDivisionError | ArithmeticError)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("entrypoint", "method"),
    [("Missing", "ping"), ("Greeter", "nope"), (None, "nope")],
    ids=["missing-class", "missing-method", "default-missing-method"],
)
def test_missing_entrypoint_or_method_is_entrypoint_not_found(
    config: Callable[..., Any], entrypoint: str | None, method: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.GREETER)
            with pytest.raises(EntrypointNotFound) as caught:
                await getattr(stub.get_entrypoint(entrypoint, props={"x": 1}), method)()
            assert caught.value.tenant_id == "acme"
            assert isinstance(caught.value, LookupError)
            assert await stub.get_entrypoint("Greeter").ping() == "pong"
            await _other_tenant_still_works(sup)

    asyncio.run(main())


def test_worker_without_default_or_fetch_is_entrypoint_not_found(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "nofetch", basic.MULTI_MODULE["util"])
            with pytest.raises(EntrypointNotFound, match="Default"):
                await stub.fetch("http://x/")

    asyncio.run(main())


def test_private_methods_are_not_callable_from_the_host(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.GREETER)
            with pytest.raises(AttributeError):
                stub.get_entrypoint("Greeter")._private  # noqa: B018
            invoke = sup.invoke(stub.worker, "Greeter", "__init__", [], {}, None)
            with pytest.raises(EntrypointNotFound):
                await invoke

    asyncio.run(main())


@pytest.mark.parametrize("method", ["thing", "things"])
def test_returning_a_tenant_object_is_a_result_error(
    config: Callable[..., Any], method: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "failing", basic.FAILING)
            with pytest.raises(ResultError, match="plain data") as caught:
                await getattr(stub.get_entrypoint(), method)()
            assert isinstance(caught.value, ValueError)
            assert await stub.get_entrypoint().ping() == "pong"
            await _other_tenant_still_works(sup)

    asyncio.run(main())


def test_fetch_returning_a_non_response_is_a_result_error(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "failing", basic.FAILING)
            with pytest.raises(ResultError, match="Response"):
                await stub.fetch("http://x/")
            assert await stub.get_entrypoint().ping() == "pong"
            await _other_tenant_still_works(sup)

    asyncio.run(main())


def test_module_top_level_raising_is_a_specialise_error(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "bad-import", basic.IMPORT_RAISES)
            for _ in range(2):  # every call fails the same way; nothing is left half-loaded
                with pytest.raises(SpecialiseError) as caught:
                    await stub.get_entrypoint().ping()
                error = caught.value
                assert (error.tenant_id, error.type_name) == ("bad-import", "KeyError")
                assert any(
                    'File "main.py", line 5, in <module>' in line for line in error.traceback
                )
                _assert_tenant_frames_only(error)
                assert sup.sandbox_pid("bad-import") is None
            await _other_tenant_still_works(sup)

    asyncio.run(main())
