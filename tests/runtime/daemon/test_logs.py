"""Tenant log lines in the daemon: a bounded backlog per tenant, streamed as server-sent events
to that tenant only, ended by close(); the daemon's own log keeps its level and its format.

Streams are served by a real aiohttp server on a real socket; lines come through the real logger
(`dynworkers.tenant`), as `runtime.handle` emits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from dynworkers.runtime import TenantError
from dynworkers.runtime.daemon.logs import (
    TENANT_LOGGER,
    DaemonLogFormatter,
    JsonLogFormatter,
    TenantLogs,
    last_event_id,
)

tenant_log = logging.getLogger(TENANT_LOGGER)
#: a guard against a hang, never a timing assertion
PATIENCE = 5.0


def say(tenant: str, message: str, level: int = logging.INFO) -> None:
    """What `runtime.handle` does with a tenant's console record."""
    tenant_log.log(
        level, "%s", message, extra={"tenant_id": tenant, "tenant_timestamp": 1700000000.5}
    )


@contextlib.asynccontextmanager
async def serving(logs: TenantLogs) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        tail = int(request.query.get("tail", "0"))
        follow = request.query.get("follow", "1") == "1"
        after = last_event_id(request)
        tenant = request.match_info["tenant"]
        return await logs.stream(request, tenant, tail, follow=follow, after=after)

    app = web.Application()
    app.router.add_get("/logs/{tenant}", handler)
    logs.install()
    try:
        async with TestClient(TestServer(app)) as client:
            try:
                yield client
            finally:
                await logs.close()
    finally:
        logs.uninstall()


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


async def next_event(response: ClientResponse) -> bytes:
    event = await asyncio.wait_for(response.content.readuntil(b"\n\n"), PATIENCE)
    assert event.endswith(b"\n\n"), f"the stream ended instead: {event!r}"
    return event


async def next_line(response: ClientResponse) -> dict[str, Any]:
    event = await next_event(response)
    while event.startswith(b":"):  # a comment (keep-alive)
        event = await next_event(response)
    ident = None
    if event.startswith(b"id: "):  # a line has its id; a notice of lost lines has none
        head, event = event.split(b"\n", 1)
        ident = int(head.removeprefix(b"id: "))
    assert event.startswith(b"data: ") and event.count(b"\n") == 2, event
    line: dict[str, Any] = json.loads(event.removeprefix(b"data: "))
    assert line.get("id") == ident, "the event's id is the line's"
    return line


async def eventually(predicate: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# --- streams -------------------------------------------------------------------------------------


def test_a_stream_sends_the_tail_of_the_backlog_then_only_its_own_tenants_live_lines() -> None:
    async def body() -> None:
        logs = TenantLogs()
        async with serving(logs) as client:
            for n in range(5):
                say("acme", f"acme {n}")
                say("other", f"other {n}")
            async with client.get("/logs/acme?tail=3") as response:
                assert response.headers["Content-Type"] == "text/event-stream"
                assert response.headers["Cache-Control"] == "no-cache"
                backlog = [await next_line(response) for _ in range(3)]
                assert [line["message"] for line in backlog] == ["acme 2", "acme 3", "acme 4"]
                assert backlog[0]["id"] < backlog[1]["id"] < backlog[2]["id"]
                assert {k: v for k, v in backlog[0].items() if k != "id"} == {
                    "tenant": "acme",
                    "ts": 1700000000.5,
                    "level": "info",
                    "message": "acme 2",
                }
                say("other", "not for acme")
                say("acme", "live", logging.WARNING)
                say("other", "still not for acme")
                say("acme", "live again", logging.ERROR)
                live = [await next_line(response) for _ in range(2)]
                assert [(line["level"], line["message"]) for line in live] == [
                    ("warning", "live"),
                    ("error", "live again"),
                ]
                assert {line["tenant"] for line in backlog + live} == {"acme"}

    run(body)


def test_close_ends_open_streams_after_their_queued_lines_and_later_streams_after_the_backlog() -> (
    None
):
    async def body() -> None:
        logs = TenantLogs()
        async with serving(logs) as client:
            say("acme", "before")
            async with client.get("/logs/acme?tail=10") as response:
                assert (await next_line(response))["message"] == "before"
                say("acme", "queued")
                await logs.close()
                assert (await next_line(response))["message"] == "queued"
                rest = await asyncio.wait_for(response.content.read(), PATIENCE)
                assert rest == b""  # ended cleanly, nothing more
            assert logs.open_streams == 0
            async with client.get("/logs/acme?tail=10") as late:
                assert [(await next_line(late))["message"] for _ in range(2)] == [
                    "before",
                    "queued",
                ]
                assert await asyncio.wait_for(late.content.read(), PATIENCE) == b""

    run(body)


def test_a_stream_without_follow_sends_the_backlog_and_ends() -> None:
    async def body() -> None:
        logs = TenantLogs()
        async with serving(logs) as client:
            say("acme", "one")
            async with client.get("/logs/acme?tail=5&follow=0") as response:
                assert (await next_line(response))["message"] == "one"
                assert await asyncio.wait_for(response.content.read(), PATIENCE) == b""

    run(body)


def test_a_stream_ends_when_its_client_goes_away() -> None:
    async def body() -> None:
        logs = TenantLogs()
        async with serving(logs) as client:
            response = await client.get("/logs/acme")
            say("acme", "hello")
            assert (await next_line(response))["message"] == "hello"
            assert logs.open_streams == 1
            response.close()
            await eventually(lambda: logs.open_streams == 0)

    run(body)


def test_an_idle_stream_gets_keep_alive_comments() -> None:
    async def body() -> None:
        logs = TenantLogs(heartbeat=0.05)
        async with serving(logs) as client, client.get("/logs/acme") as response:
            assert await next_event(response) == b": keep-alive\n\n"

    run(body)


def test_a_subscriber_that_falls_behind_drops_lines_and_is_told_how_many() -> None:
    async def body() -> None:
        logs = TenantLogs(queue_size=5)
        async with serving(logs) as client, client.get("/logs/acme") as response:
            say("acme", "first")
            assert (await next_line(response))["message"] == "first"
            for n in range(20):  # one burst, faster than any stream: no await in between
                say("acme", f"burst {n}")
            got = [await next_line(response) for _ in range(5)]
            assert [line["message"] for line in got] == [f"burst {n}" for n in range(5)]
            say("acme", "after")
            notice, after = await next_line(response), await next_line(response)
            assert notice["dropped"] == 15 and notice["level"] == "warning"
            assert "15 log lines dropped" in notice["message"]
            assert after["message"] == "after"
            # the backlog itself lost nothing
            assert len(logs.lines("acme")) == 22

    run(body)


def test_lines_logged_from_another_thread_reach_the_stream() -> None:
    async def body() -> None:
        logs = TenantLogs()
        async with serving(logs) as client, client.get("/logs/acme") as response:
            say("acme", "from the loop")
            assert (await next_line(response))["message"] == "from the loop"
            thread = threading.Thread(target=say, args=("acme", "from a thread"))
            thread.start()
            thread.join()
            assert (await next_line(response))["message"] == "from a thread"

    run(body)


# --- backlog -------------------------------------------------------------------------------------


def test_backlogs_are_bounded_per_tenant_and_in_number_of_tenants() -> None:
    logs = TenantLogs(backlog=3, max_tenants=2)
    logs.install()
    try:
        for n in range(10):
            say("acme", f"a{n}")
        say("beta", "b")
        say("gamma", "c")  # a third tenant: acme, the least recent, is forgotten
    finally:
        logs.uninstall()
    assert logs.lines("acme") == []
    assert [line["message"] for line in logs.lines("beta")] == ["b"]
    assert [line["message"] for line in logs.lines("gamma", tail=1)] == ["c"]
    say("gamma", "after uninstall")
    assert len(logs.lines("gamma")) == 1


def test_records_without_a_tenant_are_not_filed() -> None:
    logs = TenantLogs()
    logs.install()
    try:
        tenant_log.info("no tenant here")
        tenant_log.info("an empty one", extra={"tenant_id": ""})
    finally:
        logs.uninstall()
    assert logs.open_streams == 0
    assert not logs._backlogs


# --- the daemon's log ----------------------------------------------------------------------------


def test_tenant_error_goes_to_the_tenants_stream_and_the_daemon_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dynworkers")
    logs = TenantLogs()
    error = TenantError(
        "acme",
        "ValueError",
        "boom",
        [
            "Traceback (most recent call last):",
            '  File "main", line 3, in fetch',
            "ValueError: boom",
        ],
    )
    logs.install()
    try:
        logs.tenant_error("acme", error)
    finally:
        logs.uninstall()
    (line,) = logs.lines("acme")
    assert line["level"] == "error"
    assert line["message"].startswith("uncaught ValueError: boom\nTraceback")
    assert '  File "main", line 3, in fetch' in line["message"]
    records = [r for r in caplog.records if getattr(r, "tenant_id", None) == "acme"]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    assert records[0].getMessage() == line["message"]


def test_the_daemon_log_keeps_its_level_while_streams_get_every_tenant_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dynworkers")
    first, second = TenantLogs(), TenantLogs()  # two daemons in one process
    logger = logging.getLogger(TENANT_LOGGER)
    before = (logger.level, logger.propagate)
    first.install()
    second.install()
    try:
        say("acme", "chatter", logging.DEBUG)
        say("acme", "trouble", logging.WARNING)
    finally:
        second.uninstall()
        first.uninstall()
    assert (logger.level, logger.propagate) == before
    for logs in (first, second):
        assert [line["message"] for line in logs.lines("acme")] == ["chatter", "trouble"]
    in_daemon_log = [r.getMessage() for r in caplog.records if r.name == TENANT_LOGGER]
    assert in_daemon_log == ["trouble"]  # once, although two daemons listen


def test_the_daemon_log_format_has_iso_time_level_logger_and_tenant() -> None:
    formatter = DaemonLogFormatter()
    record = tenant_log.makeRecord(
        TENANT_LOGGER,
        logging.INFO,
        "main",
        1,
        "hello %s",
        ("world",),
        None,
        extra={"tenant_id": "acme"},
    )
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
    assert re.fullmatch(
        rf"{iso} INFO dynworkers\.tenant tenant=acme hello world", formatter.format(record)
    )
    plain = logging.getLogger("dynworkers.pool").makeRecord(
        "dynworkers.pool", logging.WARNING, "pool", 1, "spare boot failed", (), None
    )
    assert re.fullmatch(
        rf"{iso} WARNING dynworkers\.pool spare boot failed", formatter.format(plain)
    )


def test_close_cuts_off_a_stream_whose_client_stopped_reading() -> None:
    async def body() -> None:
        logs = TenantLogs(queue_size=200)
        async with serving(logs) as client, client.get("/logs/acme") as response:
            say("acme", "first")
            assert (await next_line(response))["message"] == "first"
            big = "x" * 100_000
            for _ in range(200):  # ~20 MB: more than the socket buffers hold; nobody reads
                say("acme", big)
            await asyncio.sleep(0.2)  # let the stream write until it blocks
            await asyncio.wait_for(logs.close(timeout=0.2), PATIENCE)
            await eventually(lambda: logs.open_streams == 0)

    run(body)


# --- resuming and the JSON format -----------------------------------------------------------------


def test_a_stream_resumes_after_its_last_event_id_with_nothing_twice_and_nothing_missing() -> None:
    async def body() -> None:
        logs = TenantLogs()
        async with serving(logs) as client:
            for n in range(4):
                say("acme", f"line {n}")
            async with client.get("/logs/acme?tail=2&follow=0") as response:
                seen = [await next_line(response) for _ in range(2)]
            assert [line["message"] for line in seen] == ["line 2", "line 3"]
            say("acme", "line 4")  # logged while the client was away
            say("other", "not acme's")
            headers = {"Last-Event-ID": str(seen[0]["id"])}
            async with client.get("/logs/acme?tail=0", headers=headers) as response:
                missed = [await next_line(response) for _ in range(2)]
                assert [line["message"] for line in missed] == ["line 3", "line 4"]
                say("acme", "line 5")
                assert (await next_line(response))["message"] == "line 5"
            # the query form, for a client that cannot set headers; a newer id sends nothing old
            last = f"/logs/acme?follow=0&last_event_id={missed[-1]['id']}"
            async with client.get(last) as response:
                assert (await next_line(response))["message"] == "line 5"
                assert await asyncio.wait_for(response.content.read(), PATIENCE) == b""

    run(body)


def test_a_resume_from_a_line_the_backlog_let_go_says_lines_were_lost() -> None:
    async def body() -> None:
        logs = TenantLogs(backlog=3)
        async with serving(logs) as client:
            say("acme", "first")
            (first,) = logs.lines("acme")
            for n in range(5):
                say("acme", f"later {n}")  # "first" and two of these leave the backlog
            headers = {"Last-Event-ID": str(first["id"])}
            async with client.get("/logs/acme?follow=0", headers=headers) as response:
                notice = await next_line(response)
                assert notice["gap"] is True and notice["level"] == "warning"
                assert "lost" in notice["message"] and "id" not in notice
                kept = [(await next_line(response))["message"] for _ in range(3)]
                assert kept == ["later 2", "later 3", "later 4"]
            # resuming from a line still held: no notice
            headers = {"Last-Event-ID": str(logs.lines("acme")[0]["id"])}
            async with client.get("/logs/acme?follow=0", headers=headers) as response:
                assert [(await next_line(response))["message"] for _ in range(2)] == [
                    "later 3",
                    "later 4",
                ]

    run(body)


def test_a_last_event_id_that_is_not_an_id_is_refused_naming_it() -> None:
    for bad in ("yesterday", "-3"):
        request = make_mocked_request("GET", "/", headers={"Last-Event-ID": bad})
        with pytest.raises(ValueError, match="Last-Event-ID must be"):
            last_event_id(request)
    assert last_event_id(make_mocked_request("GET", "/")) is None
    assert last_event_id(make_mocked_request("GET", "/?last_event_id=12")) == 12


def test_the_json_log_format_is_one_object_a_line_with_the_records_fields() -> None:
    formatter = JsonLogFormatter()
    record = tenant_log.makeRecord(
        TENANT_LOGGER,
        logging.ERROR,
        "main",
        1,
        "hello %s\nsecond line",
        ("world",),
        None,
        extra={"tenant_id": "acme", "status": 500},
    )
    text = formatter.format(record)
    assert "\n" not in text
    entry = json.loads(text)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", entry.pop("time"))
    entry.pop("trace_id", None), entry.pop("span_id", None)
    assert entry == {
        "level": "ERROR",
        "logger": "dynworkers.tenant",
        "message": "hello world\nsecond line",
        "tenant": "acme",
        "status": 500,
    }
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        failed = logging.getLogger("dynworkers.pool").makeRecord(
            "dynworkers.pool", logging.ERROR, "pool", 1, "failed", (), sys.exc_info()
        )
    assert "ZeroDivisionError: boom" in json.loads(formatter.format(failed))["exception"]
