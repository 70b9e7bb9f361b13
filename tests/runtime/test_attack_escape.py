"""Attack: leave the box (processes, sockets, files, os/subprocess). Restricted code is stopped
by the language layer; trusted code (plain Python) by the OS layer: seccomp kills the process
on an AF_INET socket or a fork, and the filesystem is read-only to it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dynworkers.loader import CompileError
from dynworkers.runtime import SandboxCrashed, SpecialiseError, Supervisor, TenantError
from dynworkers.sandbox_policy import Policy
from tests.runtime.support import evictions, load
from tests.tenants import attack_escape, basic


async def _bystander_works(sup: Supervisor) -> None:
    other = await load(sup, "bystander", basic.GREETER)
    assert await other.get_entrypoint("Greeter").ping() == "pong"


@pytest.mark.parametrize("module", attack_escape.RESTRICTED_MODULES)
def test_restricted_code_cannot_import_os_level_modules(
    config: Callable[..., Any], module: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            source = attack_escape.RESTRICTED_IMPORT.format(module=module)
            stub = await load(sup, "escaper", source)
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().attempt()
            assert caught.value.type_name == "ImportError"
            assert repr(module) in caught.value.message
            await _bystander_works(sup)

    asyncio.run(main())


@pytest.mark.parametrize("module", attack_escape.RESTRICTED_MODULES)
def test_an_import_the_policy_does_not_offer_is_refused_when_loaded(
    config: Callable[..., Any], module: str
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            source = attack_escape.STATIC_IMPORT.format(module=module)
            with pytest.raises(CompileError) as caught:
                await load(sup, "escaper", source)
            [(where, line, message)] = caught.value.errors
            assert (where, line) == ("main", 7)
            assert f"module {module!r} is not allowed" in message and "json" in message
            await _bystander_works(sup)

    asyncio.run(main())


def test_restricted_top_level_import_of_os_fails_specialisation(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            hidden = "try:\n    import os\nexcept ImportError:\n    raise\n"
            stub = await load(sup, "escaper", hidden)
            with pytest.raises(SpecialiseError) as caught:
                await stub.fetch("http://x/")
            assert caught.value.type_name == "ImportError"
            await _bystander_works(sup)

    asyncio.run(main())


@pytest.mark.parametrize(
    "source",
    [
        "x = __import__('os')\n",
        "x = ().__class__.__base__.__subclasses__()\n",
        "def f(g):\n    return g.gi_frame.f_back\n",
        "x = eval('1 + 1')\n",
        "exec('import os')\n",
    ],
    ids=["dunder-import", "subclasses-walk", "frame-walk", "eval", "exec"],
)
def test_restricted_escape_hatches_do_not_compile(config: Callable[..., Any], source: str) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            with pytest.raises(CompileError):
                await load(sup, "escaper", source)
            await _bystander_works(sup)

    asyncio.run(main())


def test_restricted_code_has_no_open(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "escaper", attack_escape.RESTRICTED_BUILTINS)
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().write_file()
            assert caught.value.type_name == "NameError"
            assert await stub.get_entrypoint().ping() == "pong"
            await _bystander_works(sup)

    asyncio.run(main())


def test_trusted_inet_socket_is_killed_by_seccomp(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(policy=Policy.trusted())) as sup:
            stub = await load(sup, "escaper", attack_escape.TRUSTED)
            await stub.get_entrypoint().ping()
            if "seccomp" not in sup.stats()["hardening"]["active"]:
                pytest.skip("seccomp is not available on this machine")
            with pytest.raises(SandboxCrashed, match="SIGSYS"):
                await stub.get_entrypoint().inet_socket()
            assert evictions(sup, "crash") == 1
            await _bystander_works(sup)
            assert await stub.get_entrypoint().ping() == "pong"

    asyncio.run(main())


def test_trusted_fork_is_stopped(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(policy=Policy.trusted())) as sup:
            stub = await load(sup, "escaper", attack_escape.TRUSTED)
            with pytest.raises(SandboxCrashed):
                await stub.get_entrypoint().fork()
            await _bystander_works(sup)
            assert await stub.get_entrypoint().ping() == "pong"

    asyncio.run(main())


@pytest.mark.parametrize("where", ["tmp", "state_dir"])
def test_trusted_file_write_is_a_permission_error_inside_the_tenant(
    config: Callable[..., Any], tmp_path: Path, where: str
) -> None:
    target = (
        Path("/tmp") / f"dynworkers-escape-{uuid.uuid4().hex}"
        if where == "tmp"
        else tmp_path / "state" / "planted.py"
    )

    async def main() -> None:
        async with Supervisor(config(policy=Policy.trusted())) as sup:
            stub = await load(sup, "escaper", attack_escape.TRUSTED)
            try:
                with pytest.raises(TenantError) as caught:
                    await stub.get_entrypoint().write_file(str(target))
                assert caught.value.type_name == "PermissionError"
                assert await stub.get_entrypoint().ping() == "pong"
                await _bystander_works(sup)
            finally:
                escaped = target.exists()
                target.unlink(missing_ok=True)
            assert not escaped, f"the tenant wrote {target}"

    asyncio.run(main())
