"""Defence in depth, tested with the trusted preset (an attacker past the language layer): a
sandbox sees none of the host's environment, cannot read the state directory (the KV database
and its WAL, which hold other tenants' values), the host's working directory, /home or /root;
the state directory is 0700 and its databases and cache files 0600."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dynworkers.engine.sqlite_store import SQLiteStore
from dynworkers.runtime import Supervisor
from dynworkers.runtime.zygote_client import zygote_environment
from dynworkers.sandbox_policy import Policy
from tests.runtime.support import load
from tests.tenants import attack_host_read

SECRET = "dw-host-secret-4242"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_directory_is_private_and_its_files_are_0600(
    config: Callable[..., Any], tmp_path: Path
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            writer = await load(sup, "victim", attack_host_read.KV_WRITER, env={"KV": sup.kv("n")})
            assert await writer.get_entrypoint().store("4111-1111") == "4111-1111"
            state = Path(sup.config.state_dir)
            assert _mode(state) == 0o700
            assert _mode(state / "compile-cache") == 0o700
            databases = [state / "kv.db", state / "kv.db-wal"]
            cached = [p for p in (state / "compile-cache").rglob("*") if p.is_file()]
            assert cached, "the compile cache wrote nothing"
            for path in databases + cached:
                assert _mode(path) == 0o600, path
            for folder in {p.parent for p in cached}:
                assert _mode(folder) == 0o700, folder
        store = SQLiteStore(tmp_path / "engine" / "engine.db")
        await store.open()
        try:
            assert _mode(tmp_path / "engine" / "engine.db") == 0o600
        finally:
            await store.close()

    asyncio.run(main())


def test_the_zygote_environment_holds_no_host_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TEST_SECRET", SECRET)
    env = zygote_environment()
    assert set(env) == {"PATH", "LC_ALL", "PYTHONPATH"}
    assert SECRET not in "".join(env.values())


def test_a_trusted_tenant_reads_nothing_of_the_host(
    config: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "host-cwd"
    workdir.mkdir()
    (workdir / "notes.txt").write_text(SECRET)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DW_TEST_SECRET", SECRET)

    # Still root in the sandbox (no uid drop): file modes allow everything, only Landlock denies.
    policy = Policy.trusted().with_os(drop_privileges=False)

    async def main() -> None:
        async with Supervisor(config(policy=policy)) as sup:
            writer = await load(sup, "victim", attack_host_read.KV_WRITER, env={"KV": sup.kv("n")})
            await writer.get_entrypoint().store("4111-1111")
            reader = (await load(sup, "reader", attack_host_read.TRUSTED_READER)).get_entrypoint()
            seen = await reader.environment()
            assert SECRET not in repr(seen), "the host's environment reached the sandbox"
            assert seen["environ"] == {}
            if "landlock" not in sup.stats()["hardening"]["active"]:
                pytest.skip("Landlock is not available on this machine")
            state = Path(sup.config.state_dir).resolve()
            for path in (state / "kv.db", state / "kv.db-wal", workdir / "notes.txt"):
                assert await reader.read(str(path)) == ["denied", "PermissionError"], path
            for folder in (state, workdir, Path("/home"), Path("/root"), Path("/etc")):
                if folder.exists():
                    verdict = await reader.listdir(str(folder))
                    assert verdict == ["denied", "PermissionError"], folder
            # what a sandbox needs stays readable
            assert (await reader.read(await reader.stdlib_file()))[0] == "ok"

    asyncio.run(main())
