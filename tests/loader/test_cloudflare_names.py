"""Cloudflare's Worker Loader conventions: module names as file names, and `get` returning a
stub at once whose first call loads the code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import InvalidWorkerCode, LazyWorker, WorkerCode, WorkerStub
from dynworkers.runtime import Supervisor

ENTRY = """
from workers import Response, WorkerEntrypoint
import util

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response(util.greet("world"))

    def twice(self, n):
        return util.double(n)
"""

UTIL = """
def greet(name):
    return f"Hello {name}!"

def double(n):
    return 2 * n
"""


def test_file_names_become_module_names() -> None:
    code = WorkerCode(main_module="entry.py", modules={"entry.py": ENTRY, "util.py": UTIL})
    assert code.main_module == "entry" and sorted(code.modules) == ["entry", "util"]
    plain = WorkerCode(main_module="entry", modules={"entry": ENTRY, "util": UTIL})
    assert plain.source_hash == code.source_hash


@pytest.mark.parametrize(
    ("main", "modules", "words"),
    [
        ("entry.py", {"entry.py": ENTRY, "entry": ENTRY}, "given twice"),
        ("src/entry.py", {"src/entry.py": ENTRY}, "has a directory"),
    ],
)
def test_ambiguous_or_nested_names_are_refused(
    main: str, modules: dict[str, str], words: str
) -> None:
    with pytest.raises(InvalidWorkerCode, match=words):
        WorkerCode(main_module=main, modules=modules)


def test_get_returns_a_stub_at_once_and_loads_on_the_first_call(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            runs: list[str] = []

            def callback() -> WorkerCode:
                runs.append("loaded")
                return WorkerCode(
                    main_module="entry.py", modules={"entry.py": ENTRY, "util.py": UTIL}
                )

            worker = sup.loader.get("cf", callback)
            assert isinstance(worker, LazyWorker) and runs == []
            response = await worker.fetch("http://cf/")
            assert (response.status, response.text()) == (200, "Hello world!")
            assert await worker.get_entrypoint().twice(4) == 8
            assert runs == ["loaded"]
            stub = await sup.loader.get("cf", callback)  # the earlier style keeps working
            assert isinstance(stub, WorkerStub) and runs == ["loaded"]

    asyncio.run(main())


def test_a_failing_callback_surfaces_on_the_first_call_and_is_retried(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config()) as sup:
            attempts: list[int] = []

            def callback() -> WorkerCode:
                attempts.append(1)
                if len(attempts) == 1:
                    raise LookupError("no such tenant yet")
                return WorkerCode(main_module="entry.py", modules={"entry": ENTRY, "util": UTIL})

            entry = sup.loader.get("flaky", callback).get_entrypoint()
            with pytest.raises(LookupError, match="no such tenant"):
                await entry.twice(1)
            assert await entry.twice(3) == 6 and len(attempts) == 2

    asyncio.run(main())
