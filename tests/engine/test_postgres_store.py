"""What the PostgreSQL store holds beyond the shared contract: group commit, its versioned schema,
typed errors when the server is unreachable or lost, and recovery without a reopen.

Every test runs against a real server (tests/postgres.py); nothing is mocked.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from dynworkers.engine import InstanceNotFound, InstanceRecord, StoreError, open_store
from dynworkers.engine.postgres_schema import ENGINE_MIGRATIONS
from dynworkers.engine.postgres_store import PostgresStore
from tests.postgres import PostgresServer, free_port


def record(instance_id: str) -> InstanceRecord:
    return InstanceRecord(instance_id, "wf", "queued", b"\x80", 1.0, 1.0)


def test_postgres_and_postgres_short_urls_open_the_postgres_store() -> None:
    assert isinstance(open_store("postgresql://u@127.0.0.1/db"), PostgresStore)
    assert isinstance(open_store("postgres://u@127.0.0.1/db"), PostgresStore)


def test_concurrent_writes_share_commits_and_a_failing_one_fails_alone(postgres_url: str) -> None:
    async def main() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            await store.create_instances([record("a")])
            before = store.commits
            results = await asyncio.gather(
                *(store.create_instances([record(f"i{n}")]) for n in range(200)),
                store.update_instance("missing", status="running"),
                return_exceptions=True,
            )
            assert sum(1 for r in results if r and not isinstance(r, BaseException)) == 200
            assert isinstance(results[-1], InstanceNotFound)
            assert store.commits - before < 200  # group commit: many writes per transaction
            assert len(await store.list_instances(limit=1000)) == 201
        finally:
            await store.close()

    asyncio.run(main())


def test_data_survives_reopen_and_a_newer_schema_is_refused(postgres_url: str) -> None:
    async def main() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        await store.create_instances([record("a")])
        await store.close()
        store = PostgresStore(postgres_url)
        await store.open()  # migrations already applied: nothing to do
        assert (await store.get_instance("a")).id == "a"
        await store.close()
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute("UPDATE schema_version SET version=99 WHERE component='engine'")
        with pytest.raises(StoreError, match="newer than this dynworkers"):
            await PostgresStore(postgres_url).open()

    asyncio.run(main())


def test_hosts_opening_a_fresh_database_at_once_migrate_it_once(postgres_url: str) -> None:
    async def main() -> None:
        stores = [PostgresStore(postgres_url) for _ in range(4)]
        await asyncio.gather(*(store.open() for store in stores))
        try:
            await stores[0].create_instances([record("a")])
            assert (await stores[3].get_instance("a")).id == "a"
        finally:
            for store in stores:
                await store.close()
        with psycopg.connect(postgres_url) as db:
            assert db.execute("SELECT component, version FROM schema_version").fetchall() == [
                ("engine", len(ENGINE_MIGRATIONS))
            ]

    asyncio.run(main())


def test_an_unreachable_server_at_open_is_a_store_error_saying_what_to_check() -> None:
    url = f"postgresql://dw:secret@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as caught:
        asyncio.run(PostgresStore(url).open())
    assert "secret" not in str(caught.value)  # the password is never printed
    assert "server is running" in str(caught.value)
    with pytest.raises(StoreError, match="check the URL"):
        asyncio.run(PostgresStore("postgresql://dw@127.0.0.1:notaport/x").open())


def test_a_lost_server_is_a_store_error_naming_the_operation_and_the_store_recovers(
    private_postgres: PostgresServer,
) -> None:
    url = private_postgres.create_database()

    async def main() -> None:
        store = PostgresStore(url)
        await store.open()
        try:
            await store.create_instances([record("a")])
            private_postgres.crash()
            with pytest.raises(StoreError, match=r"get_instance: .*unreachable"):
                await store.get_instance("a")
            with pytest.raises(StoreError, match="create_instances: "):
                await store.create_instances([record("b")])
            with pytest.raises(StoreError, match="update_instance: "):
                await store.update_instance("a", status="running")
            private_postgres.restart()
            # the same store, not reopened: the pool reconnects by itself
            deadline = asyncio.get_running_loop().time() + 30  # guards against a hang only
            while True:
                try:
                    assert await store.create_instances([record("c")]) == ["c"]
                    break
                except StoreError:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.1)
            await store.update_instance("a", status="running")
            assert (await store.get_instance("a")).status == "running"
            assert {r.id for r in await store.list_instances()} == {"a", "c"}
        finally:
            await store.close()

    asyncio.run(main())
