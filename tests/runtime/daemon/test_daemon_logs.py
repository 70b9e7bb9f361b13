"""The daemon's own log and its answers as production runs them: `log_format = "json"`, the
access log, and `expose_errors` off (its default), on a real `dynworkers serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.daemon.support import DaemonProcess, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(120)


def entries(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """The daemon's log records: every line of its log is one JSON object."""
    found = []
    for line in daemon.log().splitlines():
        if line.strip():
            found.append(json.loads(line))
    return found


def test_json_logs_an_access_line_per_request_and_no_tenant_traceback_in_answers(
    tmp_path: Path,
) -> None:
    tenants = tmp_path / "tenants"
    write_tenant(tenants, "echo", main=programs.ECHO)
    write_tenant(tenants, "boom", main=programs.BOOM)
    write_tenant(tenants, "broken", main=programs.BROKEN)
    # log_level warning: access lines were asked for, and show all the same
    daemon = DaemonProcess(
        tmp_path, tenants, log_format="json", access_log=1, log_level="warning"
    ).start()
    try:
        assert daemon.get("/echo/hello?x=1").status == 200
        boom = daemon.get("/boom/")
        broken = daemon.get("/broken/")
        assert daemon.get("/nobody-here/").status == 404
    finally:
        assert daemon.stop() == 0
    assert boom.status == 500
    assert boom.json() == {
        "error": "TenantError",
        "message": "tenant 'boom' raised an uncaught exception; its traceback is in the "
        "tenant's log (dynworkers logs TENANT)",
        "tenant": "boom",
    }
    assert broken.status == 500 and broken.json()["error"] == "CompileError"
    assert "errors" not in broken.json()

    logged = entries(daemon)
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logged)
    access = {entry["path"]: entry for entry in logged if entry["logger"] == "dynworkers.access"}
    assert set(access) == {"/echo/hello?x=1", "/boom/", "/broken/", "/nobody-here/"}
    hello = access["/echo/hello?x=1"]
    assert (hello["method"], hello["status"], hello["tenant"], hello["level"]) == (
        "GET",
        200,
        "echo",
        "INFO",
    )
    assert hello["bytes"] > 0 and hello["duration_ms"] >= 0 and hello["remote"] == "127.0.0.1"
    assert (access["/boom/"]["status"], access["/boom/"]["error"]) == (500, "TenantError")
    assert "tenant" not in access["/nobody-here/"]  # no tenant by that name
    # the traceback that left no answer is in the daemon's log, with its tenant
    (uncaught,) = [e for e in logged if e["logger"] == "dynworkers.tenant"]
    assert uncaught["tenant"] == "boom" and "boom from tenant code" in uncaught["message"]
    assert "explode" in uncaught["message"]
