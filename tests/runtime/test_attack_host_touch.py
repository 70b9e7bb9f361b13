"""Attack: hand the host an object whose methods would run tenant code when the host compares,
hashes, prints, collects or probes it. Results cross as msgpack and decode to builtins only, so
such an object is a ResultError or plain data, and never a live tenant object on the host."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import CompileError
from dynworkers.runtime import ResultError, Supervisor
from tests.runtime.support import load
from tests.tenants import attack_host_touch, basic

PLAIN_TYPES = (dict, list, str, bytes, int, float, bool, type(None))


def assert_plain(value: object) -> None:
    """Exactly builtin types all the way down: nothing the host touches can run tenant code."""
    assert type(value) in PLAIN_TYPES, f"{type(value)!r} reached the host"
    if type(value) is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            assert_plain(key)
            assert_plain(item)
    elif type(value) is list:
        for item in value:  # type: ignore[attr-defined]
            assert_plain(item)


async def _bystander_works(sup: Supervisor) -> None:
    other = await load(sup, "bystander", basic.GREETER)
    assert await other.get_entrypoint("Greeter").ping() == "pong"


@pytest.mark.parametrize(
    "method",
    ["sticky", "sticky_nested", "sticky_key", "sticky_dict", "sticky_str", "sticky_list"],
)
def test_returned_object_with_tenant_dunders_is_refused_or_plain(
    config: Callable[..., Any], method: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "toucher", attack_host_touch.COMPARABLE)
            try:
                value = await getattr(stub.get_entrypoint(), method)()
            except ResultError as error:
                assert error.tenant_id == "toucher"
            else:
                assert_plain(value)
                # Comparing, hashing and printing the value on the host runs only builtins.
                assert value == value
                assert str(value) and repr(value)
                assert value != "forged"
            assert_plain(await stub.get_entrypoint().touched())
            await _bystander_works(sup)

    asyncio.run(main())


@pytest.mark.parametrize("dunder", attack_host_touch.REFUSED_DUNDERS)
def test_dunders_the_host_could_trigger_are_refused_at_compile_time(
    config: Callable[..., Any], dunder: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            source = attack_host_touch.REFUSED_DUNDER.format(name=dunder)
            with pytest.raises(CompileError, match=dunder):
                await load(sup, "toucher", source)
            await _bystander_works(sup)

    asyncio.run(main())


def test_response_subclass_becomes_a_plain_fetch_response(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "shifty", attack_host_touch.RESPONSE_SUBCLASS)
            try:
                resp = await stub.fetch("http://x/")
            except ResultError:
                pass
            else:
                assert type(resp.status) is int and resp.status == 200
                assert type(resp.body) is bytes and resp.body == b"shifty body"
                assert_plain(resp.headers)
                assert resp.text() == "shifty body"
            await _bystander_works(sup)

    asyncio.run(main())
