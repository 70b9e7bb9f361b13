"""Dispatch through the loader's stubs: fetch, entrypoints, caching of loaded workers, compile
errors, WorkerCode validation, multi-module tenants, env data and redeploys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import CompileError, InvalidWorkerCode, Limits, WorkerCode
from dynworkers.runtime import Supervisor
from tests.runtime.support import code, load
from tests.tenants import attack_bombs, basic


def test_fetch_round_trips_status_headers_and_body(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.GREETER)
            resp = await stub.fetch(
                "http://x/path", method="post", headers={"a": "b"}, body=b"hello"
            )
            assert resp.status == 201
            assert resp.headers["x-echo"] == "b"
            assert resp.headers["x-url"] == "http://x/path"
            assert resp.body == b"method=POST body=hello"
            assert resp.text() == "method=POST body=hello"
            assert isinstance(resp.body, bytes)

    asyncio.run(main())


def test_fetch_json_response_decodes_on_the_host(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.GREETER)
            resp = await stub.get_entrypoint("Json").fetch("http://x/j")
            assert resp.status == 200
            assert resp.headers["content-type"] == "application/json"
            assert resp.json() == {"url": "http://x/j", "n": [1, 2, 3]}

    asyncio.run(main())


def test_named_entrypoint_receives_props_and_env(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.GREETER, env={"GREETING": "hi"})
            assert await stub.get_entrypoint("Greeter", props={"x": 1}).greet("bob") == "hi, bob #1"
            assert await stub.get_entrypoint("Greeter", props={"x": 2}).greet("ann") == "hi, ann #2"

    asyncio.run(main())


def test_rpc_arguments_and_keywords_round_trip_as_plain_data(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.GREETER)
            greeter = stub.get_entrypoint("Greeter", props={"x": 1})
            result = await greeter.echo(
                1, "two", [3.5, None], b"\x00", flag=True, nested={"k": [1]}
            )
            assert result == {
                "args": [1, "two", [3.5, None], b"\x00"],
                "kwargs": {"flag": True, "nested": {"k": [1]}},
            }

    asyncio.run(main())


def test_non_plain_host_arguments_are_refused_before_dispatch(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.GREETER)
            with pytest.raises(TypeError, match="plain data"):
                await stub.get_entrypoint("Greeter", props={"x": 1}).echo(object())
            assert await stub.get_entrypoint("Greeter").ping() == "pong"

    asyncio.run(main())


def test_module_level_fetch_gets_request_env_and_ctx(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "mod", basic.MODULE_FETCH, env={"GREETING": "hey"})
            resp = await stub.fetch("http://x/m")
            assert resp.json() == {"greeting": "hey", "path": "http://x/m"}

    asyncio.run(main())


def test_first_call_is_cold_and_later_calls_are_warm(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "acme", basic.GREETER)
            greeter = stub.get_entrypoint("Greeter")
            await greeter.ping()
            stats = sup.stats()
            assert (stats["cold"], stats["warm"]) == (1, 0)
            pid = sup.sandbox_pid("acme")
            await greeter.ping()
            await greeter.ping()
            stats = sup.stats()
            assert (stats["cold"], stats["warm"]) == (1, 2)
            assert stats["pool"]["size"] == 1
            assert sup.sandbox_pid("acme") == pid

    asyncio.run(main())


def test_loader_get_runs_the_callback_once_per_worker_id(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            runs = []

            def callback() -> WorkerCode:
                runs.append(1)
                return code(basic.GREETER)

            first = await sup.loader.get("acme", callback)
            second = await sup.loader.get("acme", callback)
            assert first is second
            assert len(runs) == 1
            assert sup.stats()["loader"]["callbacks_run"] == 1

    asyncio.run(main())


def test_concurrent_loader_gets_share_one_callback_run(config: Callable[..., Any]) -> None:
    async def main() -> None:
        # one sandbox per tenant: eight concurrent calls would otherwise start several
        async with Supervisor(config(max_sandboxes_per_tenant=1)) as sup:
            runs = []

            async def callback() -> WorkerCode:
                runs.append(1)
                await asyncio.sleep(0.05)
                return code(basic.GREETER)

            stubs = await asyncio.gather(*(sup.loader.get("acme", callback) for _ in range(8)))
            assert len(runs) == 1
            assert all(stub is stubs[0] for stub in stubs)
            replies = await asyncio.gather(*(s.get_entrypoint("Greeter").ping() for s in stubs))
            assert replies == ["pong"] * 8
            assert sup.stats()["cold"] == 1

    asyncio.run(main())


def test_loader_load_is_never_cached(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            first = await sup.loader.load(code(basic.GREETER))
            second = await sup.loader.load(code(basic.GREETER))
            assert first.id != second.id
            assert await first.get_entrypoint("Greeter").ping() == "pong"
            assert await second.get_entrypoint("Greeter").ping() == "pong"
            stats = sup.stats()
            assert stats["cold"] == 2  # each load is its own worker, in its own sandbox
            assert stats["loader"]["workers"] == 0
            assert sup.sandbox_pid(first.id) != sup.sandbox_pid(second.id)

    asyncio.run(main())


def test_compile_error_lists_every_error_with_module_and_line(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            with pytest.raises(CompileError) as caught:
                await load(sup, "broken", basic.COMPILE_ERRORS)
            error = caught.value
            assert [(module, line) for module, line, _ in error.errors] == [
                ("main", 3),
                ("main", 6),
                ("other", 3),
            ]
            assert "__import__" in error.errors[0][2]
            assert "_secret" in error.errors[1][2]
            assert "SyntaxError" in error.errors[2][2]
            assert "main:3" in str(error) and "main:6" in str(error) and "other:3" in str(error)
            assert error.worker_id == "broken"

    asyncio.run(main())


def test_compile_error_caches_nothing_and_leaves_the_supervisor_working(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            with pytest.raises(CompileError):
                await load(sup, "broken", basic.COMPILE_ERRORS)
            assert "broken" not in sup.loader.workers
            assert sup.stats()["cold"] == 0  # nothing reached a sandbox
            fixed = await load(sup, "broken", basic.GREETER)  # the callback runs again
            assert await fixed.get_entrypoint("Greeter").ping() == "pong"
            other = await load(sup, "other", basic.GREETER)
            assert await other.get_entrypoint("Greeter").ping() == "pong"

    asyncio.run(main())


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: WorkerCode("main", {}), "modules"),
        (lambda: WorkerCode("main", {"other": "x = 1"}), "main_module 'main'"),
        (lambda: WorkerCode("main", {"main": "x = 1", "bad-name": "y = 1"}), "bad-name"),
        (lambda: WorkerCode("main", {"main": "x = 1", "workers": "y = 1"}), "reserved"),
        (lambda: WorkerCode("main", {"main": b"x = 1"}), "source must be str"),
        (lambda: WorkerCode("main", {"main": "x = 1"}, env={"_hidden": 1}), "_hidden"),
        (lambda: WorkerCode("main", {"main": "x = 1"}, env={"not an id": 1}), "not an id"),
        (lambda: WorkerCode("main", {"main": "x = 1"}, global_outbound="http://proxy"), "callable"),
        (lambda: WorkerCode("main", {"main": "x = 1"}, limits={"deadline": 1}), "Limits"),
        (lambda: Limits(deadline=0), "deadline"),
        (lambda: Limits(deadline=7200), "deadline"),
        (lambda: Limits(memory_mb=1), "memory_mb"),
    ],
    ids=[
        "no-modules",
        "main-missing",
        "bad-module-name",
        "reserved-module",
        "bytes-source",
        "private-env-name",
        "env-name-not-identifier",
        "outbound-not-callable",
        "limits-not-Limits",
        "zero-deadline",
        "deadline-too-long",
        "memory-too-small",
    ],
)
def test_malformed_worker_code_is_refused_with_the_field_named(
    build: Callable[[], object], match: str
) -> None:
    with pytest.raises(InvalidWorkerCode, match=match):
        build()


def test_env_value_that_is_not_plain_data_is_refused_at_load(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            with pytest.raises(InvalidWorkerCode, match="CLIENT"):
                await load(sup, "acme", basic.ENV_DATA, env={"CLIENT": object()})
            assert "acme" not in sup.loader.workers

    asyncio.run(main())


def test_callback_returning_something_else_is_invalid_worker_code(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            with pytest.raises(InvalidWorkerCode, match="not a WorkerCode"):
                await sup.loader.get("acme", lambda: {"main": basic.GREETER})  # type: ignore[arg-type,return-value]
            with pytest.raises(InvalidWorkerCode, match="worker id"):
                await sup.loader.get("", lambda: code(basic.GREETER))

    asyncio.run(main())


def test_tenant_modules_import_each_other(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "multi", basic.MULTI_MODULE)
            assert await stub.get_entrypoint().compute(5) == [15, 10, "helpers"]

    asyncio.run(main())


def test_env_plain_data_is_copied_into_the_sandbox(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            host_config = {"items": [1, 2], "name": "n"}
            env = {"CONFIG": host_config, "LIMIT": 10, "FLAG": None}
            stub = await load(sup, "envy", basic.ENV_DATA, env=env)
            entry = stub.get_entrypoint()
            assert await entry.read() == {
                "CONFIG": {"items": [1, 2], "name": "n"},
                "LIMIT": 10,
                "FLAG": None,
            }
            mutated = await entry.mutate()
            assert mutated["items"] == [1, 2, 99]
            assert host_config == {"items": [1, 2], "name": "n"}  # the host's object is untouched

    asyncio.run(main())


def test_redeploy_serves_the_new_version(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            v1 = await load(sup, "acme", basic.VERSIONED.format(version="v1"))
            assert await v1.get_entrypoint().version() == "v1"
            old_pid = sup.sandbox_pid("acme")
            assert sup.loader.forget("acme")
            v2 = await load(sup, "acme", basic.VERSIONED.format(version="v2"))
            assert v2.version != v1.version
            assert await v2.get_entrypoint().version() == "v2"
            assert sup.sandbox_pid("acme") != old_pid
            assert sup.stats()["evictions"]["redeploy"] == 1
            assert sup.stats()["loader"]["callbacks_run"] == 2

    asyncio.run(main())


def test_forget_of_an_unknown_worker_is_false(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            assert sup.loader.forget("nobody") is False

    asyncio.run(main())


@pytest.mark.parametrize("how", ["return", "response"])
def test_result_over_64_kib_within_max_result_bytes_is_served(
    config: Callable[..., Any], how: str
) -> None:
    size = 100 * 1024  # far under the default max_result_bytes (8 MiB)

    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "big", attack_bombs.BOMBS)
            if how == "return":
                assert await stub.get_entrypoint().huge_result(size) == "z" * size
            else:
                resp = await stub.get_entrypoint("Huge").fetch(
                    "http://x/", method="POST", body=str(size)
                )
                assert resp.body == b"z" * size

    asyncio.run(main())


def test_result_just_under_64_kib_is_served(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "big", attack_bombs.BOMBS)
            assert await stub.get_entrypoint().huge_result(60 * 1024) == "z" * (60 * 1024)

    asyncio.run(main())
