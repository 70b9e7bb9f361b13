"""Helpers for the runtime suite: load a tenant in one line, wait for the sweeper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from dynworkers.loader import Limits, WorkerCode, WorkerStub
from dynworkers.runtime import Supervisor


def code(
    source: str | Mapping[str, str],
    *,
    env: Mapping[str, Any] | None = None,
    limits: Limits | None = None,
    global_outbound: Any = None,
) -> WorkerCode:
    """A WorkerCode whose main module is `main`; `source` is its text, or every module's."""
    modules = {"main": source} if isinstance(source, str) else dict(source)
    return WorkerCode(
        "main", modules, env=dict(env or {}), limits=limits, global_outbound=global_outbound
    )


async def load(
    sup: Supervisor, tenant_id: str, source: str | Mapping[str, str], **kwargs: Any
) -> WorkerStub:
    """`sup.loader.get(tenant_id, ...)` for this source."""
    return await sup.loader.get(tenant_id, lambda: code(source, **kwargs))


def evictions(sup: Supervisor, reason: str) -> int:
    return int(sup.stats()["evictions"][reason])


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Wait until `predicate()` holds (the sweeper and the zygote report asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)
