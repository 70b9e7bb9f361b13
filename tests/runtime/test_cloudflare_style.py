"""Tenants written as Cloudflare's Python Workers documentation writes them run unchanged
through a real Supervisor: async handlers, awaited bindings, Response defaults, handler forms."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.runtime import ServiceContext, Supervisor, TenantError
from tests.engine.harness import Harness
from tests.runtime.support import load
from tests.tenants import cloudflare


def test_the_documented_hello_world_answers_in_plain_text(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "hello", cloudflare.HELLO)
            response = await stub.fetch("http://hello/")
            assert response.status == 200
            assert response.text() == "Hello world!"
            assert response.headers["content-type"] == "text/plain;charset=UTF-8"

    asyncio.run(main())


def test_a_kv_binding_is_used_with_await(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "kv", cloudflare.KV, env={"FOO": sup.kv("foo")})
            response = await stub.fetch("http://kv/")
            assert (response.status, response.text()) == (200, "baz")
            assert response.headers["content-type"] == "text/plain;charset=UTF-8"

    asyncio.run(main())


def test_sync_and_async_methods_share_one_binding_api(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "both", cloudflare.BOTH_STYLES, env={"KV": sup.kv("ns")})
            entry = stub.get_entrypoint()
            assert await entry.put_sync("a", 1) == 1
            assert await entry.put_async("b", [2]) == [2]
            assert await entry.not_awaited() == "<pending>"  # awaitable, as on Cloudflare
            with pytest.raises(TenantError, match="has no method 'nothing'") as info:
                await entry.failing()
            assert any("failing" in line for line in info.value.traceback)

    asyncio.run(main())


def test_gathered_binding_calls_sleep_and_wait_for(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "gather", cloudflare.GATHER, env={"KV": sup.kv("ns")})
            response = await stub.fetch("http://gather/")
            assert response.json() == {
                "values": [0, 1, 2, 3, 4],
                "timed_out": True,
                "slow": "helper",
            }
            assert response.headers["content-type"] == "application/json"

    asyncio.run(main())


@pytest.mark.parametrize(
    ("path", "status", "content_type", "extra"),
    [
        ("text", 201, "text/plain;charset=UTF-8", ("x-kind", "text")),
        ("html", 200, "text/html", None),
        ("json", 202, "application/json", None),
        ("redirect", 302, None, ("location", "https://example.com/next")),
        ("moved", 301, None, ("location", "https://example.com/next")),
        ("bytes", 200, None, None),
    ],
)
def test_response_defaults_as_cloudflare(
    config: Callable[..., Any],
    path: str,
    status: int,
    content_type: str | None,
    extra: tuple[str, str] | None,
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "responses", cloudflare.RESPONSES)
            response = await stub.fetch(f"http://r/{path}")
            assert response.status == status
            assert response.headers.get("content-type") == content_type
            if extra:
                assert response.headers[extra[0]] == extra[1]

    asyncio.run(main())


def test_headers_are_case_insensitive_and_multi_valued(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "headers", cloudflare.RESPONSES)
            response = await stub.fetch("http://r/headers", headers={"x-TEST": "yes"})
            assert response.json() == {
                "get": "one, two",
                "in": True,
                "cookies": ["a=1", "b=2"],
                "request": "yes",
            }

    asyncio.run(main())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (cloudflare.FETCH_WITHOUT_REQUEST, "no request needed"),
        (cloudflare.ON_FETCH_TWO, "GET hi"),
    ],
)
def test_handler_forms(config: Callable[..., Any], source: str, expected: str) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "forms", source, env={"GREETING": "hi"})
            response = await stub.fetch("http://forms/")
            assert (response.status, response.text()) == (200, expected)

    asyncio.run(main())


def test_module_level_on_fetch_with_ctx(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "three", cloudflare.ON_FETCH_THREE)
            response = await stub.fetch("http://three/x")
            assert response.json() == {"props": None, "url": "http://three/x"}

    asyncio.run(main())


def test_a_workflow_started_from_fetch_is_read_back_with_await_status(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Harness(config()) as harness:
            harness.deploy("wf", cloudflare.WORKFLOW)
            stub = await harness.stub("wf")
            response = await stub.fetch("http://wf/", method="POST", body=json.dumps({"n": 5}))
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            instance_id = response.json()["id"]
            await harness.wait_for(f"wf/{instance_id}", "complete")
            body = json.dumps({"id": instance_id})
            again = await stub.fetch("http://wf/", method="POST", body=body)
            assert again.json() == {
                "id": instance_id,
                "details": {"status": "complete", "output": {"total": 20}, "error": None},
            }

    asyncio.run(main())


def test_the_modules_people_reach_for_work_in_a_real_sandbox(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "modules", cloudflare.MODULES)
            response = await stub.fetch("http://m/items?name=pen")
            assert response.status == 200, response.text()
            assert response.json() == {
                "query": {"path": "/items", "name": "pen"},
                "year": 2024,
                "sha": "f478fe4e",
                "b64": "aGk=",
                "uuid": 36,
            }

    asyncio.run(main())


class Accounts:
    """A service binding, called with await from the scheduled handler."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def whoami(self, n: int) -> list[Any]:
        return [self.ctx.tenant_id, n]


def test_scheduled_handlers_receive_a_controller(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            kv = sup.kv("ns")
            env = {"KV": kv, "ACCOUNTS": sup.service(Accounts)}
            stub = await load(sup, "cron", cloudflare.SCHEDULED, env=env)
            tick = {"cron": "*/5 * * * *", "scheduled_time": 1_700_000_000_000}
            assert await stub.get_entrypoint().scheduled(tick) == ["cron", 1]
            assert kv.store.get("cron", "ns", "last") == [
                "*/5 * * * *",
                1_700_000_000_000,
                "scheduled",
            ]
            module_level = await load(sup, "cron2", cloudflare.ON_SCHEDULED, env={"KV": kv})
            assert await module_level.get_entrypoint().scheduled(tick) is None
            assert kv.store.get("cron2", "ns", "module-level") == "*/5 * * * *"

    asyncio.run(main())


def test_a_dict_returned_from_fetch_is_refused_saying_to_wrap_it(
    config: Callable[..., Any],
) -> None:
    source = "def fetch(request, env, ctx):\n    return {'a': 1}\n"

    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "plain", source)
            with pytest.raises(TenantError) as caught:
                await stub.fetch("http://plain/")
            message = caught.value.message
            assert message.startswith("fetch() must return a workers.Response, got dict")
            assert "Response.json" in message and "not plain data" not in message

    asyncio.run(main())
