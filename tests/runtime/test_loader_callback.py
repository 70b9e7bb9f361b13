"""When the loader runs a `get` callback again (Cloudflare: "any number of times"): dynworkers
keeps the loaded code across the death of its sandbox, so the callback runs again only after the
entry left the loader's cache (LRU or `forget`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dynworkers.loader import WorkerCode
from dynworkers.runtime import Supervisor

SOURCE = """
from workers import Response

def on_fetch(request, env):
    return Response("ok")
"""


def test_a_dead_sandbox_does_not_rerun_the_callback_but_a_forgotten_worker_does(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        runs = []

        def callback() -> WorkerCode:
            runs.append(1)
            return WorkerCode("main", {"main": SOURCE})

        async with Supervisor(config()) as sup:
            stub = sup.loader.get("t", callback)
            assert (await stub.fetch("http://t/")).status == 200
            assert sup.evict("t")  # the sandbox dies
            again = sup.loader.get("t", callback)
            assert (await again.fetch("http://t/")).status == 200  # rehydrated
            assert len(runs) == 1
            sup.loader.forget("t")
            assert (await sup.loader.get("t", callback).fetch("http://t/")).status == 200
            assert len(runs) == 2

    asyncio.run(main())
