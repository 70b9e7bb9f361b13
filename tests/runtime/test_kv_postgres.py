"""KV on PostgreSQL: the same behaviour and limits as on SQLite, one KV for every host (here, two
supervisors on one database), and a lost database reaching the tenant as a typed error.

Real sandboxes and a real server (tests/postgres.py); nothing is mocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg

from dynworkers.runtime import Supervisor
from tests.postgres import PostgresServer
from tests.runtime.support import load
from tests.tenants import basic

#: a tenant that reports a failed KV call instead of raising it
CAREFUL = """
from workers import WorkerEntrypoint, BindingError


class Default(WorkerEntrypoint):
    def get(self, key):
        try:
            return ["ok", self.env.KV.get(key)]
        except BindingError as exc:
            return ["error", str(exc)]

    def put(self, key, value):
        try:
            return ["ok", self.env.KV.put(key, value)]
        except BindingError as exc:
            return ["error", str(exc)]
"""


def test_kv_get_put_delete_and_list_by_prefix_on_postgres(
    config: Callable[..., Any], postgres_url: str
) -> None:
    async def main() -> None:
        async with Supervisor(config(store=postgres_url)) as sup:
            kv = (
                await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            ).get_entrypoint()
            assert await kv.get("missing") is None
            await kv.put("user/1", {"name": "ann", "tags": [1, 2]})
            await kv.put("user/2", "bob")
            await kv.put("user_3", 3)  # `_` is not a wildcard in a prefix
            await kv.put("order/1", 1.5)
            await kv.put("über", "u")  # ordered by code point, as on SQLite
            assert await kv.get("user/1") == {"name": "ann", "tags": [1, 2]}
            assert await kv.list("user/") == ["user/1", "user/2"]
            assert await kv.list("") == ["order/1", "user/1", "user/2", "user_3", "über"]
            assert await kv.delete("user/2") is True
            assert await kv.delete("user/2") is False
            await kv.put("user/1", "replaced")
            assert await kv.get("user/1") == "replaced"
        with psycopg.connect(postgres_url) as db:  # it is in the database, not in a file
            assert db.execute("SELECT count(*) FROM kv").fetchone() == (4,)
        assert not (config().state_dir / "kv.db").exists()

    asyncio.run(main())


def test_two_hosts_on_one_database_share_a_tenants_kv_and_keep_tenants_apart(
    config: Callable[..., Any], postgres_url: str, tmp_path: Any
) -> None:
    async def main() -> None:
        host_a = Supervisor(config(store=postgres_url, state_dir=tmp_path / "a"))
        host_b = Supervisor(config(store=postgres_url, state_dir=tmp_path / "b"))
        async with host_a, host_b:
            on_a = await load(host_a, "acme", basic.BINDINGS, env={"KV": host_a.kv("ns")})
            on_b = await load(host_b, "acme", basic.BINDINGS, env={"KV": host_b.kv("ns")})
            other = await load(host_b, "globex", basic.BINDINGS, env={"KV": host_b.kv("ns")})
            await on_a.get_entrypoint().put("k", "from a")
            assert await on_b.get_entrypoint().get("k") == "from a"  # read your writes anywhere
            await on_b.get_entrypoint().put("k", "from b")
            assert await on_a.get_entrypoint().get("k") == "from b"
            assert await other.get_entrypoint().get("k") is None

    asyncio.run(main())


def test_bad_keys_and_oversized_values_are_binding_errors_and_nothing_is_written(
    config: Callable[..., Any], postgres_url: str
) -> None:
    async def main() -> None:
        async with Supervisor(config(store=postgres_url)) as sup:
            stub = await load(sup, "acme", basic.BINDINGS, env={"KV": sup.kv("ns")})
            message = await stub.get_entrypoint().bad_key()
            assert message.startswith("BindingError: ") and "key" in message
            message = await stub.get_entrypoint().put_checked("big", "x" * (2 * 1024 * 1024))
            assert message.startswith("BindingError: ") and "bytes" in message
            assert await stub.get_entrypoint().get("big") is None

    asyncio.run(main())


def test_a_lost_database_is_a_typed_error_in_the_tenant_and_kv_recovers_without_a_restart(
    config: Callable[..., Any], private_postgres: PostgresServer
) -> None:
    url = private_postgres.create_database()

    async def main() -> None:
        async with Supervisor(config(store=url)) as sup:
            kv = (await load(sup, "acme", CAREFUL, env={"KV": sup.kv("ns")})).get_entrypoint()
            assert await kv.put("k", 1) == ["ok", None]
            private_postgres.crash()
            for call in (kv.get("k"), kv.put("k", 2)):
                status, message = await call
                assert status == "error"
                assert "the KV is unavailable" in message and "unreachable" in message, message
            private_postgres.restart()
            deadline = asyncio.get_running_loop().time() + 30  # guards against a hang only
            while (answer := await kv.get("k"))[0] != "ok":
                assert asyncio.get_running_loop().time() < deadline, answer
                await asyncio.sleep(0.1)
            assert answer == ["ok", 1]  # the same sandbox, the same supervisor
            assert await kv.put("k", 3) == ["ok", None]

    asyncio.run(main())
