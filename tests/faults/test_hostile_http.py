"""Hostile HTTP against a real daemon: every answer typed, the daemon undisturbed.

Deep JSON, lone surrogates, headers HTTP cannot carry, a flood of idle connections, slow heads and
bodies, malformed requests, and shutdown with a request that never ends. Sockets go to 127.0.0.1
only, and their number and lifetime are bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.runtime.daemon.support import Answer, DaemonProcess, http, write_tenant
from tests.tenants import daemon as programs
from tests.tenants import hostile_http

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def running(root: Path, **settings: Any) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(root, **settings)
    write_tenant(daemon.tenants, "echo", main=programs.ECHO)
    write_tenant(daemon.tenants, "bad", main=hostile_http.BAD_HEADERS)
    write_tenant(daemon.tenants, "spin", main=programs.SPIN)
    daemon.start()
    try:
        yield daemon
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()


def connect(url: str, timeout: float = 30.0) -> socket.socket:
    where = urlsplit(url)
    assert where.hostname == "127.0.0.1"
    return socket.create_connection((where.hostname, where.port or 80), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the daemon closes the connection (the socket's timeout guards a hang)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_nested_2000_deep_is_400_naming_the_problem(tmp_path: Path) -> None:
    with running(tmp_path) as daemon:
        workflows = "/_/tenants/echo/workflows"
        for path, method, body in (
            (workflows, "POST", '{"params": ' + nested(2000) + "}"),
            (workflows, "POST", nested(2000)),
            ("/_/tenants/echo", "PUT", '{"modules": ' + '{"a": ' * 2000 + "1" + "}" * 2001),
            (workflows + "/x/events", "POST", '{"type": "t", "payload": ' + nested(150) + "}"),
        ):
            answer = daemon.api(method, path, body)
            assert answer.status == 400, (path, answer)
            assert "levels deep" in answer.json()["message"]
    assert "Traceback" not in daemon.log()


def test_a_lone_surrogate_in_a_module_name_or_source_is_422_naming_the_module(
    tmp_path: Path,
) -> None:
    with running(tmp_path) as daemon:
        for modules, module in (
            ({"main": "x = 1", "bad\ud800": "y = 2"}, "bad\\ud800"),
            ({"main": "x = 1\ny = '\ud800'\n"}, "main"),
        ):
            answer = daemon.api("PUT", "/_/tenants/uni", json.dumps({"modules": modules}))
            assert answer.status == 422, answer
            (problem,) = answer.json()["errors"]
            assert problem["module"] == module
            assert "not valid Unicode" in problem["message"]
        assert daemon.api("GET", "/_/tenants/uni").status == 404  # nothing was deployed
    assert "Traceback" not in daemon.log()


def test_response_headers_with_cr_lf_nul_or_a_bad_name_are_502_with_a_message(
    tmp_path: Path,
) -> None:
    with running(tmp_path) as daemon:
        for path in ("/bad/crlf", "/bad/nul", "/bad/name", "/bad/later"):
            answer = daemon.get(path)
            assert answer.status == 502, (path, answer)
            body = answer.json()
            assert body["error"] == "InvalidHeader"
            assert "header" in body["message"], body
            assert "set-cookie" not in {k.lower() for k in answer.headers}
        fine = daemon.get("/bad/")
        assert fine.status == 200 and fine.headers.get("x-fine") == "yes"


def test_idle_connections_past_the_cap_are_refused_and_the_control_api_stays_reachable(
    tmp_path: Path,
) -> None:
    with running(tmp_path, max_connections=20, keepalive_timeout=600) as daemon:
        idle = [connect(daemon.front) for _ in range(60)]
        try:
            assert daemon.api("GET", "/healthz").status == 200
            assert daemon.api("GET", "/_/stats").status == 200
            refused = 0
            for sock in idle:
                sock.settimeout(0.5)
                with contextlib.suppress(TimeoutError):
                    if b" 503 " in sock.recv(4096).split(b"\r\n")[0]:
                        refused += 1
            assert refused >= 40, refused  # the 20 it holds stay open and silent
        finally:
            for sock in idle:
                sock.close()
        assert daemon.get("/echo/after").status == 200  # they were closed: room again


def test_a_slow_head_is_408_and_an_idle_connection_is_closed(tmp_path: Path) -> None:
    with running(tmp_path, header_timeout=1, keepalive_timeout=2) as daemon:
        slow, quiet = connect(daemon.front), connect(daemon.front)
        with slow, quiet:
            slow.sendall(b"GET /echo/x HTTP/1.1\r\nHost: a\r\n")  # the head never ends
            assert read_all(slow).startswith(b"HTTP/1.1 408")
            assert read_all(quiet) == b""  # nothing sent: closed after keepalive_timeout


def test_a_slow_head_after_a_quick_request_on_the_same_connection_is_408(tmp_path: Path) -> None:
    """The head timer stays armed across a keep-alive connection's requests: one armed for an
    earlier head re-arms for the slow one instead of lapsing."""
    with (
        running(tmp_path, header_timeout=1, keepalive_timeout=30) as daemon,
        connect(daemon.front) as sock,
    ):
        sock.sendall(b"GET /echo/x HTTP/1.1\r\nHost: a\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:  # the quick request's answer (its head at least)
            first += sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # the timer armed for the first head has not fired yet
        sock.sendall(b"GET /echo/y HTTP/1.1\r\nHost: a\r\n")  # this head never ends
        rest = read_all(sock)
        assert b"HTTP/1.1 408" in first + rest


def test_a_body_not_sent_within_body_timeout_is_408(tmp_path: Path) -> None:
    with running(tmp_path, body_timeout=1) as daemon:
        for url in (daemon.front + "/echo/x", daemon.control + "/_/tenants/echo/workflows"):
            with connect(url) as sock:
                path = urlsplit(url).path
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{{".encode()
                )
                head = read_all(sock).split(b"\r\n")[0]
                assert b" 408 " in head, (url, head)


def test_malformed_requests_log_rate_limited_warning_lines_without_tracebacks(
    tmp_path: Path,
) -> None:
    with running(tmp_path) as daemon:
        for _ in range(30):
            with connect(daemon.front) as sock:
                sock.sendall(b"GET /echo/ HTTP/1.1\r\nno colon in this header\r\n\r\n")
                assert b" 400 " in read_all(sock).split(b"\r\n")[0]
        assert daemon.get("/echo/ok").status == 200
    lines = [line for line in daemon.log().splitlines() if "Error handling request" in line]
    assert 1 <= len(lines) <= 10, lines
    assert all(" WARNING " in line for line in lines), lines
    assert "Traceback" not in daemon.log()


def in_flight_request(daemon: DaemonProcess) -> tuple[threading.Thread, dict[str, Answer]]:
    results: dict[str, Answer] = {}
    thread = threading.Thread(target=lambda: results.update(spin=daemon.get("/spin/spin")))
    thread.start()
    deadline = time.monotonic() + 30
    while daemon.api("GET", "/_/stats").json()["daemon"]["in_flight"] == 0:
        assert time.monotonic() < deadline, "the request never reached the daemon"
        time.sleep(0.02)
    return thread, results


def test_a_request_still_running_when_the_drain_ends_gets_503_and_the_exit_is_0(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path, drain_timeout=1, deadline=60)
    write_tenant(daemon.tenants, "spin", main=programs.SPIN)
    daemon.start()
    try:
        thread, results = in_flight_request(daemon)
    finally:
        code = daemon.stop(signal.SIGTERM)
    thread.join(30)
    assert code == 0
    assert results["spin"].status == 503
    assert results["spin"].json()["error"] == "ShuttingDown"


def test_a_second_sigterm_ends_the_drain_at_once(tmp_path: Path) -> None:
    # the drain would last ten minutes: only the second signal lets the test end
    daemon = DaemonProcess(tmp_path, drain_timeout=600, deadline=600)
    write_tenant(daemon.tenants, "spin", main=programs.SPIN)
    daemon.start()
    try:
        thread, results = in_flight_request(daemon)
        daemon.send(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while http("GET", daemon.control + "/healthz").status != 503:  # draining
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        code = daemon.stop(signal.SIGTERM)
    thread.join(30)
    assert code == 0
    assert results["spin"].status == 503


def test_the_front_door_checks_headers_again_when_a_sandbox_got_past_its_response() -> None:
    """A reply forged past the sandbox's `Response` (the fault injected) is still 502."""
    from dynworkers.loader.stub import FetchResponse
    from dynworkers.runtime.daemon.front import FrontDoor

    forged = [
        {"x-a": "1\r\nset-cookie: stolen=1"},
        {"X-Ok": "1", "Connection": "close"},  # a valid name, remembered; a hop-by-hop one
        {"X-Ok": "2", "bad name": "x"},  # a remembered name does not let a bad one through
        {"X-Ok": "3\x00"},  # nor a bad value under a remembered name
    ]

    class Forged:
        async def fetch(self, *args: Any, **kwargs: Any) -> FetchResponse:
            return FetchResponse(200, forged.pop(0), b"")

    class Tenants:
        def loaded(self, tenant: str) -> None:
            return None  # never warm: every request goes through `stub`

        async def stub(self, tenant: str) -> Forged:
            return Forged()

    async def main() -> None:
        front = FrontDoor(Tenants(), 1024)  # type: ignore[arg-type]
        answer = await front._dispatch("t", "GET", "http://t/", {}, b"")
        assert answer.status == 502
        assert "InvalidHeader" in answer.text  # type: ignore[attr-defined]
        fine = await front._dispatch("t", "GET", "http://t/", {}, b"")
        assert fine.status == 200 and fine.headers["X-Ok"] == "1"
        assert "Connection" not in fine.headers
        for _ in range(2):
            answer = await front._dispatch("t", "GET", "http://t/", {}, b"")
            assert answer.status == 502, answer.headers
            assert "InvalidHeader" in answer.text  # type: ignore[attr-defined]

    asyncio.run(main())
