"""The deploy-time import check: a worker that imports what the sandbox would refuse is refused
when it is loaded, naming the module, the line and what may be imported."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.loader import CompileCache, CompileError, WorkerCode, compile_worker
from dynworkers.loader.imports import API_MODULES
from dynworkers.runtime import Supervisor
from dynworkers.sandbox_policy import Policy

ALLOWED = """
import json
import urllib.parse
from urllib import parse
from workers import Response
import asyncio
import helpers
from helpers import double


def fetch(request, env, ctx):
    return Response.json({"n": double(2), "q": parse.quote("a b"), "j": json.dumps(1)})
"""

HELPERS = "def double(n):\n    return 2 * n\n"


def _compile(modules: dict[str, str], policy: Policy | None = None) -> Any:
    return compile_worker("t", WorkerCode("main", modules), policy or Policy(), CompileCache(None))


def test_the_api_the_vetted_modules_and_the_tenants_own_modules_are_allowed() -> None:
    _compile({"main": ALLOWED, "helpers": HELPERS})


def test_an_import_the_sandbox_would_refuse_names_the_module_line_and_the_allowlist() -> None:
    source = "from workers import Response\n\nimport requests\nfrom os import path\n"
    with pytest.raises(CompileError) as caught:
        _compile({"main": source})
    (m1, l1, first), (m2, l2, second) = caught.value.errors
    assert (m1, l1, m2, l2) == ("main", 3, "main", 4)
    assert "module 'requests' is not allowed" in first and "module 'os'" in second
    for allowed in ("json", "workers", "urllib.parse", "its own modules"):
        assert allowed in first
    assert "requests" in str(caught.value)


def test_a_module_missing_from_the_worker_is_refused() -> None:
    with pytest.raises(CompileError, match="'helpers' is not allowed"):
        _compile({"main": "import helpers\n"})


def test_relative_imports_are_refused() -> None:
    with pytest.raises(CompileError, match="relative imports"):
        _compile({"main": "from . import helpers\n", "helpers": HELPERS})


def test_an_import_guarded_by_except_importerror_is_the_tenants_fallback() -> None:
    source = "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n"
    _compile({"main": source})
    unguarded = "try:\n    import numpy\nexcept KeyError:\n    numpy = None\n"
    with pytest.raises(CompileError, match="numpy"):
        _compile({"main": unguarded})


def test_a_trusted_policy_is_not_checked() -> None:
    _compile({"main": "import os\n"}, Policy.trusted())


def test_a_module_the_policy_drops_is_refused() -> None:
    narrow = Policy(modules=frozenset({"json"}))
    with pytest.raises(CompileError, match="'math' is not allowed"):
        _compile({"main": "import math\n"}, narrow)


def test_the_api_modules_the_check_allows_are_those_the_sandbox_offers(
    config: Callable[..., Any],
) -> None:
    imports = "\n".join(f"import {name}" for name in sorted(API_MODULES))
    source = f"{imports}\nfrom workers import Response\n\ndef fetch(request, env, ctx):\n"
    source += "    return Response('ok')\n"

    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await sup.loader.get("api", lambda: WorkerCode("main", {"main": source}))
            assert (await stub.fetch("http://x/")).text() == "ok"

    asyncio.run(main())
