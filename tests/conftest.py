"""Shared fixtures for the runtime and loader suites.

Tests run their coroutines with `asyncio.run`. Every test starts its own Supervisor on its own
`tmp_path` and closes it (`async with`); the autouse `no_leaked_sandboxes` fixture holds that
rule: after each test, no zygote or sandbox process (command line
`-m dynworkers.runtime.sandbox.zygote`) may be left among this process's children.

PostgreSQL: `postgres_server` is one real server for the session (tests/postgres.py) and
`postgres_url` a fresh database on it for each test that asks; `private_postgres` is a server of
the test's own, for tests that crash it. Without PostgreSQL binaries or psycopg these tests are
skipped, with the reason, except under `CI=true`, where they fail: CI must run them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.postgres import PostgresServer, missing

ZYGOTE_MODULE = "dynworkers.runtime.sandbox.zygote"
#: A killed sandbox is reaped by its zygote a moment after the kill; this is how long we wait.
REAP_GRACE_S = 3.0


#: pids of daemons a module-scoped fixture keeps for several tests; their sandboxes are checked
#: when that fixture stops them (`DaemonProcess.stop`), not after each test
SHARED_DAEMONS: set[int] = set()


def _zygote_descendants() -> list[psutil.Process]:
    found = []
    shared = set()
    for pid in SHARED_DAEMONS:
        try:
            shared.update(p.pid for p in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    for child in psutil.Process().children(recursive=True):
        if child.pid in shared:
            continue
        try:
            cmdline = child.cmdline()
        except psutil.Error:  # exited between listing and reading it
            continue
        if ZYGOTE_MODULE in cmdline:
            found.append(child)
    return found


@pytest.fixture(autouse=True)
def no_leaked_sandboxes() -> Iterator[None]:
    yield
    deadline = time.monotonic() + REAP_GRACE_S
    leaked = _zygote_descendants()
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _zygote_descendants()
    assert not leaked, f"zygote or sandbox processes left behind: {leaked}"


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., Any]:
    """`config(**overrides)`: a small, fast SupervisorConfig on this test's state dir."""
    from dynworkers.runtime import SupervisorConfig

    def make(**overrides: Any) -> SupervisorConfig:
        values: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "spares": 1,
            "max_sandboxes": 4,
            "deadline": 5.0,
            "boot_timeout": 5.0,
        }
        values.update(overrides)
        return SupervisorConfig(**values)

    return make


def _postgres_or_skip() -> PostgresServer:
    reason = missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}", pytrace=False)
        pytest.skip(reason)
    return PostgresServer()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session, stopped (by pid) at its end."""
    server = _postgres_or_skip()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, which it may crash and restart."""
    server = _postgres_or_skip()
    try:
        yield server.start()
    finally:
        server.stop()
