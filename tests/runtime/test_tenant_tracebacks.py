"""Tenant tracebacks show the tenant's own source only, never a host file of the same name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dynworkers.runtime import Supervisor, TenantError
from tests.runtime.support import load
from tests.tenants import attack_host_files


def test_a_tenant_module_named_like_a_host_file_shows_its_own_lines(
    config: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "host-cwd"
    workdir.mkdir()
    (workdir / "settings.py").write_text(attack_host_files.HOST_SETTINGS)
    monkeypatch.chdir(workdir)  # the zygote inherits the working directory, on its sys.path

    async def main() -> None:
        async with Supervisor(config()) as sup:
            modules = {
                "main": attack_host_files.TENANT_MAIN,
                "settings": attack_host_files.TENANT_SETTINGS,
            }
            stub = await load(sup, "named-like-host", modules)
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().go()
            text = "\n".join(caught.value.traceback)
            assert 'File "settings.py", line 9, in boom' in text
            assert 'raise RuntimeError("tenant line nine")' in text
            assert "hunter2" not in text and "DATABASE_PASSWORD" not in text

    asyncio.run(main())
