"""Tenant console output becomes log records on `dynworkers.tenant`, tagged with the tenant id,
within the policy's per-invocation budget."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.runtime import Supervisor
from dynworkers.sandbox_policy import Policy
from tests.runtime.support import load
from tests.tenants import basic

TENANT_LOGGER = "dynworkers.tenant"


def _tenant_records(caplog: pytest.LogCaptureFixture, tenant_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == TENANT_LOGGER and getattr(r, "tenant_id", None) == tenant_id
    ]


def test_print_and_console_log_become_records_with_the_tenant_id(
    config: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=TENANT_LOGGER)

    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "chatty", basic.LOGGER)
            quiet = await load(sup, "quiet", basic.GREETER)
            assert await stub.get_entrypoint().speak() == "done"
            assert await quiet.get_entrypoint("Greeter").ping() == "pong"

    asyncio.run(main())
    records = _tenant_records(caplog, "chatty")
    messages = [r.getMessage() for r in records]
    assert any("printed 1" in m for m in messages), messages
    assert any("logged" in m and "'a': 1" in m for m in messages), messages
    errors = [r for r in records if "bad news" in r.getMessage()]
    assert errors and errors[0].levelno == logging.ERROR
    assert not _tenant_records(caplog, "quiet")


def test_output_bomb_is_truncated_to_max_log_bytes_and_the_supervisor_survives(
    config: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=TENANT_LOGGER)
    policy = Policy.default()
    budget = policy.max_log_bytes

    async def main() -> None:
        async with Supervisor(config(policy=policy)) as sup:
            stub = await load(sup, "flooder", basic.LOGGER)
            assert await stub.get_entrypoint().flood(10**5) == "flooded"
            logged = sum(len(r.getMessage()) for r in _tenant_records(caplog, "flooder"))
            notice = len(" [log budget exhausted: output dropped]")
            assert 0 < logged <= budget + notice
            assert any("budget" in r.getMessage() for r in _tenant_records(caplog, "flooder"))
            caplog.clear()
            # The budget is per invocation: the next call logs again.
            assert await stub.get_entrypoint().speak() == "done"
            assert any("printed" in r.getMessage() for r in _tenant_records(caplog, "flooder"))
            other = await load(sup, "other", basic.GREETER)
            assert await other.get_entrypoint("Greeter").ping() == "pong"

    asyncio.run(main())


def test_one_print_larger_than_the_budget_is_truncated(
    config: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=TENANT_LOGGER)
    budget = Policy.default().max_log_bytes

    async def main() -> None:
        async with Supervisor(config()) as sup:
            stub = await load(sup, "shouter", basic.LOGGER)
            assert await stub.get_entrypoint().shout(budget * 2) == "shouted"

    asyncio.run(main())
    messages = [r.getMessage() for r in _tenant_records(caplog, "shouter")]
    assert messages and all(len(m) <= budget + 64 for m in messages)
