"""Bindings: tenant-scoped KV that persists, service bindings with host-chosen props, outbound
fetch through the host's handler, and the errors each raises inside the tenant."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import Limits
from dynworkers.runtime import (
    OutboundRequest,
    OutboundResponse,
    SandboxTimeout,
    ServiceContext,
    Supervisor,
    TenantError,
)
from tests.runtime.support import load
from tests.tenants import basic


class Accounts:
    """A host service: the tenant calls its public methods, the host chose its props."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def whoami(self, n: int) -> list[Any]:
        return [self.ctx.tenant_id, self.ctx.props, n]

    def _secret(self) -> str:
        return "host secret"

    def refuse(self) -> None:
        raise PermissionError("account 42 is frozen")

    def opaque(self) -> object:
        return object()

    def invalid(self) -> None:
        raise ValueError("amount must be positive")

    def missing(self) -> None:
        raise KeyError("account-7")

    def broken(self) -> None:
        raise RuntimeError("host database password is hunter2")

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"


def test_kv_get_put_delete_and_list_by_prefix(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            kv = stub.get_entrypoint()
            assert await kv.get("missing") is None
            await kv.put("user/1", {"name": "ann", "tags": [1, 2]})
            await kv.put("user/2", "bob")
            await kv.put("user_3", 3)  # `_` is not a wildcard in a prefix
            await kv.put("order/1", 1.5)
            assert await kv.get("user/1") == {"name": "ann", "tags": [1, 2]}
            assert await kv.list("user/") == ["user/1", "user/2"]
            assert await kv.list("") == ["order/1", "user/1", "user/2", "user_3"]
            assert await kv.delete("user/2") is True
            assert await kv.delete("user/2") is False
            assert await kv.list("user/") == ["user/1"]
            await kv.put("user/1", "replaced")
            assert await kv.get("user/1") == "replaced"

    asyncio.run(main())


def test_kv_data_survives_a_supervisor_restart(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            await stub.get_entrypoint().put("durable", [1, "two"])
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            assert await stub.get_entrypoint().get("durable") == [1, "two"]

    asyncio.run(main())


def test_kv_is_scoped_by_tenant_and_namespace(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            shared = sup.kv("ns")
            alice = await load(sup, "alice", basic.BINDINGS, env={"KV": shared})
            bob = await load(sup, "bob", basic.BINDINGS, env={"KV": shared})
            alice_other = await load(sup, "alice2", basic.BINDINGS, env={"KV": sup.kv("other")})
            await alice.get_entrypoint().put("k", "alice's")
            assert await bob.get_entrypoint().get("k") is None
            assert await bob.get_entrypoint().list("") == []
            await bob.get_entrypoint().put("k", "bob's")
            assert await alice.get_entrypoint().get("k") == "alice's"
            assert await bob.get_entrypoint().get("k") == "bob's"
            assert await bob.get_entrypoint().delete("k") is True
            assert await alice.get_entrypoint().get("k") == "alice's"
            assert await alice_other.get_entrypoint().get("k") is None

    asyncio.run(main())


def test_bad_kv_key_raises_binding_error_inside_the_tenant(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            message = await stub.get_entrypoint().bad_key()
            assert message.startswith("BindingError: ")
            assert "key" in message
            assert await stub.get_entrypoint().get("fine") is None  # the sandbox kept serving

    asyncio.run(main())


def test_non_plain_binding_argument_raises_type_error_inside_the_tenant(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            message = await stub.get_entrypoint().opaque_value()
            assert message.startswith("TypeError: ") and "plain data" in message
            assert await stub.get_entrypoint().get("k") is None  # nothing was written

    asyncio.run(main())


def test_service_binding_gets_host_props_and_the_callers_tenant_id(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            accounts = sup.service(Accounts, props={"account": 42})
            stub = await load(sup, "acme", basic.BINDINGS, env={"ACCOUNTS": accounts})
            other = await load(sup, "globex", basic.BINDINGS, env={"ACCOUNTS": accounts})
            assert await stub.get_entrypoint().whoami(7) == ["acme", {"account": 42}, 7]
            assert await other.get_entrypoint().whoami(8) == ["globex", {"account": 42}, 8]

    asyncio.run(main())


def test_service_method_not_offered_is_an_attribute_error_inside_the_tenant(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"ACCOUNTS": sup.service(Accounts)})
            message = await stub.get_entrypoint().not_offered()
            assert message.startswith("AttributeError: ") and "drop_all" in message
            private = await stub.get_entrypoint().private_method()
            assert private.startswith("AttributeError: ")
            assert "host secret" not in private

    asyncio.run(main())


def test_without_global_outbound_tenant_fetch_raises_fetch_error(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS)
            message = await stub.get_entrypoint().outbound("http://example.com/")
            assert message.startswith("FetchError: ") and "global_outbound=None" in message

    asyncio.run(main())


def test_global_outbound_receives_the_request_and_its_response_reaches_the_tenant(
    config: Callable[..., Any],
) -> None:
    seen: list[OutboundRequest] = []

    async def outbound(request: OutboundRequest) -> OutboundResponse:
        seen.append(request)
        await asyncio.sleep(0)
        return OutboundResponse(status=202, headers={"X-Proxy": "host"}, body=b"from host")

    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, global_outbound=outbound)
            result = await stub.get_entrypoint().outbound("http://api.example/v1")
            assert result == [202, {"x-proxy": "host"}, "from host"]

    asyncio.run(main())
    assert len(seen) == 1
    request = seen[0]
    assert (request.method, request.url, request.body) == ("POST", "http://api.example/v1", b"ping")
    assert request.headers == {"x-from": "tenant"}
    assert request.tenant_id == "acme"


def test_failing_global_outbound_becomes_fetch_error_inside_the_tenant(
    config: Callable[..., Any],
) -> None:
    def outbound(request: OutboundRequest) -> OutboundResponse:
        raise ConnectionError("upstream refused")

    def wrong_type(request: OutboundRequest) -> Any:
        return {"status": 200}

    async def main() -> None:
        async with Supervisor(config()) as sup:
            failing = await load(sup, "failing", basic.BINDINGS, global_outbound=outbound)
            message = await failing.get_entrypoint().outbound("http://x/")
            assert message.startswith("FetchError: ") and "upstream refused" in message
            sloppy = await load(sup, "sloppy", basic.BINDINGS, global_outbound=wrong_type)
            message = await sloppy.get_entrypoint().outbound("http://x/")
            assert message.startswith("FetchError: ") and "OutboundResponse" in message

    asyncio.run(main())


def test_host_service_exception_becomes_binding_error_with_its_message_only(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"ACCOUNTS": sup.service(Accounts)})
            message = await stub.get_entrypoint().call_service("refuse")
            assert message == "BindingError: account 42 is frozen"
            assert "Traceback" not in message and "/runtime/" not in message
            assert await stub.get_entrypoint().whoami(1) == ["acme", {}, 1]

    asyncio.run(main())


def test_host_service_returning_non_plain_data_is_a_binding_error(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"ACCOUNTS": sup.service(Accounts)})
            message = await stub.get_entrypoint().call_service("opaque")
            assert message.startswith("BindingError: ")

    asyncio.run(main())


def test_oversized_kv_value_is_a_binding_error_and_nothing_is_written(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            message = await stub.get_entrypoint().put_checked("big", "x" * (2 * 1024 * 1024))
            assert message.startswith("BindingError: ") and "bytes" in message
            assert await stub.get_entrypoint().get("big") is None

    asyncio.run(main())


def test_binding_call_in_flight_at_the_deadline_is_cancelled_with_the_sandbox(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(
                sup,
                "acme",
                basic.BINDINGS,
                env={"ACCOUNTS": sup.service(Accounts)},
                limits=Limits(deadline=0.3),
            )
            with pytest.raises(SandboxTimeout):
                await stub.get_entrypoint().call_service("slow", 30)
            assert await stub.get_entrypoint().call_service("slow", 0) == "slept"

    asyncio.run(main())


def test_kv_value_over_64_kib_within_the_kv_limit_is_stored(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            value = "v" * (100 * 1024)
            assert await stub.get_entrypoint().put_checked("big", value) is None
            assert await stub.get_entrypoint().get("big") == value

    asyncio.run(main())


def test_builtin_host_errors_reach_the_tenant_as_their_type_with_their_message(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            env = {"ACCOUNTS": sup.service(Accounts)}
            entry = (await load(sup, "acme", basic.HOST_ERRORS, env=env)).get_entrypoint()
            assert await entry.catch("invalid") == ["ValueError", "amount must be positive", True]
            assert await entry.catch("missing") == ["KeyError", "'account-7'", True]
            frozen = ["PermissionError", "account 42 is frozen", True]
            assert await entry.catch("refuse") == frozen
            with pytest.raises(TenantError) as uncaught:
                await entry.uncaught()
            assert uncaught.value.type_name == "ValueError"
            assert uncaught.value.message == "amount must be positive"

    asyncio.run(main())


def test_any_other_host_error_is_opaque_to_the_tenant_and_logged_under_its_id(
    config: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> list[Any]:
        async with Supervisor(config()) as sup:
            env = {"ACCOUNTS": sup.service(Accounts)}
            stub = await load(sup, "acme", basic.HOST_ERRORS, env=env)
            return list(await stub.get_entrypoint().catch("broken"))

    with caplog.at_level(logging.ERROR, logger="dynworkers.bindings"):
        kind, message, _ = asyncio.run(main())
    assert kind == "BindingError" and "hunter2" not in message
    error_id = re.search(r"error id ([0-9a-f]{12})", message)
    assert error_id is not None, message
    [record] = [r for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert "'acme'" in record.getMessage() and record.exc_info is not None
    assert "hunter2" in str(record.exc_info[1])
