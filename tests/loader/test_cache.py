"""The compile cache: memory hits, disk hits across a restart, keys that follow the policy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dynworkers.loader import CompileCache, WorkerCode, compile_worker
from dynworkers.loader.cache import cache_key
from dynworkers.runtime import Supervisor
from dynworkers.sandbox_policy import Policy
from tests.tenants import basic


def _code() -> WorkerCode:
    return WorkerCode("main", dict(basic.MULTI_MODULE))


def _cache_files(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "compile-cache").rglob("*.bin"))


def test_second_compile_of_the_same_source_is_a_memory_hit(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            first = await sup.loader.load(_code())
            assert (sup.cache.misses, sup.cache.hits) == (3, 0)  # one entry per module
            second = await sup.loader.load(_code())
            assert (sup.cache.misses, sup.cache.hits) == (3, 3)
            assert first.worker.modules == second.worker.modules
            assert await second.get_entrypoint().compute(2) == [6, 4, "helpers"]

    asyncio.run(main())


def test_restarted_supervisor_compiles_nothing_it_compiled_before(
    config: Callable[..., Any], tmp_path: Path
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await sup.loader.get("multi", _code)
            assert sup.cache.misses == 3
            assert await stub.get_entrypoint().compute(1) == [3, 2, "helpers"]
        assert len(_cache_files(tmp_path / "state")) == 3
        async with Supervisor(config()) as sup:
            stub = await sup.loader.get("multi", _code)
            assert sup.cache.misses == 0
            assert sup.cache.disk_hits == 3
            assert sup.stats()["loader"]["compile_cache"]["disk_hits"] == 3
            assert await stub.get_entrypoint().compute(1) == [3, 2, "helpers"]

    asyncio.run(main())


def test_cache_key_changes_with_the_policy_version() -> None:
    default = Policy.default()
    other = default.with_modules("json")
    assert default.version != other.version
    source = basic.GREETER
    assert cache_key(default.version, "main.py", source) != cache_key(
        other.version, "main.py", source
    )
    assert cache_key(default.version, "main.py", source) == cache_key(
        Policy.default().version, "main.py", source
    )
    assert cache_key(default.version, "main.py", source) != cache_key(
        default.version, "other.py", source
    )
    assert cache_key(default.version, "main.py", source) != cache_key(
        default.version, "main.py", source + " "
    )


def test_a_new_policy_recompiles_what_an_old_one_cached(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "cache")
    compile_worker("w", _code(), Policy.default(), cache)
    assert cache.misses == 3
    compile_worker("w", _code(), Policy.default(), cache)
    assert (cache.misses, cache.hits) == (3, 3)
    compile_worker("w", _code(), Policy.default().with_modules("json"), cache)
    assert cache.misses == 6  # same source, new policy: nothing reused
    assert len(list((tmp_path / "cache").rglob("*.bin"))) == 6


def test_restarted_supervisor_with_another_policy_recompiles(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            await sup.loader.get("multi", _code)
        async with Supervisor(config(policy=Policy.default().with_modules("math"))) as sup:
            stub = await sup.loader.get("multi", _code)
            assert (sup.cache.misses, sup.cache.disk_hits) == (3, 0)
            assert await stub.get_entrypoint().compute(1) == [3, 2, "helpers"]

    asyncio.run(main())


def test_a_corrupt_cache_file_is_a_miss_not_a_broken_tenant(
    config: Callable[..., Any], tmp_path: Path
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            await sup.loader.get("multi", _code)
        for path in _cache_files(tmp_path / "state"):
            path.write_bytes(b"\x00 not marshal data")
        async with Supervisor(config()) as sup:
            stub = await sup.loader.get("multi", _code)
            assert await stub.get_entrypoint().compute(1) == [3, 2, "helpers"]

    asyncio.run(main())


def test_an_empty_cache_file_is_a_miss_and_is_rewritten(
    config: Callable[..., Any], tmp_path: Path
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            await sup.loader.get("multi", _code)
        for path in _cache_files(tmp_path / "state"):
            path.write_bytes(b"")
        async with Supervisor(config()) as sup:
            stub = await sup.loader.get("multi", _code)
            assert sup.cache.misses == 3
            assert await stub.get_entrypoint().compute(1) == [3, 2, "helpers"]
        assert all(path.stat().st_size > 0 for path in _cache_files(tmp_path / "state"))

    asyncio.run(main())
