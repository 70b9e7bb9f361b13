"""The daemon's lifecycle as a real subprocess: graceful SIGTERM with a request in flight, a
restart that resumes a sleeping workflow, SIGHUP reloading code and config, the control token,
and the CLI against a running daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.daemon.support import EXAMPLES, SOURCE_ROOT, DaemonProcess, http, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(120)


def test_sigterm_drains_a_request_in_flight_and_exits_0(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    write_tenant(daemon.tenants, "spin", main=programs.SPIN)
    daemon.start()
    try:
        assert daemon.get("/spin/").status == 200  # warm, so the request below is in flight
        results: dict[str, Any] = {}
        request = threading.Thread(target=lambda: results.update(busy=daemon.get("/spin/busy")))
        request.start()
        deadline = time.monotonic() + 20
        while daemon.api("GET", "/_/stats").json()["daemon"]["in_flight"] == 0:
            assert time.monotonic() < deadline, "the request never reached the daemon"
            time.sleep(0.01)
        daemon.send(signal.SIGTERM)
        request.join(30)
        assert results["busy"].status == 200
        assert results["busy"].body == b"done after a while"
    finally:
        code = daemon.stop()
    assert code == 0
    assert "drained 1 request(s) in flight" in daemon.log()
    with pytest.raises(OSError):
        http("GET", daemon.front + "/spin/", timeout=5)


def test_a_restart_resumes_a_sleeping_workflow(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    write_tenant(daemon.tenants, "napper", main=programs.NAPPER)
    daemon.start()
    try:
        created = daemon.post("/napper/", {"n": 9, "nap": "3 seconds"}).json()
        daemon.wait_for("napper", created["id"], "waiting")
    finally:
        assert daemon.stop() == 0
    daemon.start()
    try:
        done = daemon.wait_for("napper", created["id"], "complete", "errored")
        assert done["output"] == {"first": 10}
        listed = daemon.api("GET", "/_/tenants/napper/workflows?status=complete").json()
        assert [i["id"] for i in listed["instances"]] == [created["id"]]
    finally:
        assert daemon.stop() == 0


def test_sighup_reloads_the_code_directory_and_keeps_a_working_version(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    write_tenant(daemon.tenants, "app", main=programs.VERSION_ONE)
    daemon.start()

    def reload_and_wait(expected: str) -> None:
        mark = daemon.log().count("reloaded:")
        daemon.send(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while daemon.log().count("reloaded:") == mark:
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        assert daemon.get("/app/").body == expected.encode()

    try:
        assert daemon.get("/app/").body == b"version one"
        write_tenant(daemon.tenants, "app", main=programs.VERSION_TWO)
        write_tenant(daemon.tenants, "newcomer", main=programs.ECHO)
        reload_and_wait("version two")
        assert daemon.get("/newcomer/x").status == 200
        write_tenant(daemon.tenants, "app", main=programs.BROKEN)
        reload_and_wait("version two")  # the broken version did not replace it
        assert "does not compile" in daemon.log()
        routed = {"Host": "app.reloaded.test"}
        assert daemon.get("/", headers=routed).status == 404
        (daemon.root / "dynworkers.toml").write_text('domain = "reloaded.test"\nidle_ttl = 99.0\n')
        reload_and_wait("version two")
        assert daemon.get("/", headers=routed).body == b"version two"  # applied at once
        assert "['idle_ttl'] changed and take effect at the next restart" in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_a_control_token_guards_every_route_but_healthz(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, control_token="s3cret")
    write_tenant(daemon.tenants, "app", main=programs.VERSION_ONE)
    daemon.start()
    try:
        assert daemon.api("GET", "/_/tenants").status == 401
        assert daemon.api("GET", "/metrics").status == 401
        wrong = {"Authorization": "Bearer nope"}
        assert daemon.api("GET", "/_/tenants", headers=wrong).status == 401
        right = {"Authorization": "Bearer s3cret"}
        assert daemon.api("GET", "/_/tenants", headers=right).status == 200
        assert daemon.api("GET", "/healthz").status == 200
        assert daemon.get("/app/").status == 200  # the front door needs no token
    finally:
        assert daemon.stop() == 0


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dynworkers.runtime.cli", *args, "--url", daemon.control]
    return subprocess.run(
        command, cwd=daemon.root, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(SOURCE_ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_the_cli_deploys_runs_and_approves_the_example_pipeline(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    daemon.start()
    try:
        put = cli(daemon, "tenants", "put", "pipeline", str(EXAMPLES / "pipeline"))
        assert put.returncode == 0, put.stderr
        assert put.stdout.startswith("deployed pipeline version ")
        broken = tmp_path / "broken"
        write_tenant(tmp_path, "broken", main=programs.BROKEN)
        refused = cli(daemon, "tenants", "put", "pipeline", str(broken))
        assert refused.returncode == 2  # invalid input (422)
        assert "main:4:" in refused.stderr and "main:7:" in refused.stderr
        assert "pipeline" in cli(daemon, "tenants", "list").stdout
        created = cli(daemon, "workflows", "create", "pipeline", "--params", '{"commit": "c0ffee"}')
        assert created.returncode == 0, created.stderr
        instance = created.stdout.split("id", 1)[1].split()[0]
        daemon.wait_for("pipeline", instance, "waiting")
        status = cli(daemon, "workflows", "status", "pipeline", instance, "--json")
        assert json.loads(status.stdout)["status"] in ("waiting", "running")
        sent = cli(
            daemon, "workflows", "send-event", "pipeline", instance, "approval",
            "--payload", '{"by": "ana"}',
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        waited = cli(daemon, "workflows", "status", "pipeline", instance, "--wait", "--json")
        assert json.loads(waited.stdout)["output"]["approved_by"] == "ana"
        assert "workflows" in cli(daemon, "stats").stdout
        logs = cli(daemon, "logs", "pipeline", "--tail", "50")
        assert logs.returncode == 0 and "approved by ana" in logs.stdout
        bad = cli(daemon, "workflows", "create", "pipeline", "--params", "{nope")
        assert bad.returncode != 0 and "not valid JSON" in bad.stderr
        missing = cli(daemon, "workflows", "status", "pipeline", "no-such-id")
        assert missing.returncode == 3 and "no workflow instance" in missing.stderr  # not found
    finally:
        assert daemon.stop() == 0


DISPATCHER = """
from dynworkers.loader import Limits, WorkerCode

SOURCES = {"alpha": TENANT_SOURCE}


def load(tenant_id, host):
    if tenant_id == "wrong":
        return "not a WorkerCode"
    source = SOURCES.get(tenant_id)
    if source is None:
        return None
    return WorkerCode("main", {"main": source}, env=host.default_env(tenant_id),
                      limits=Limits(deadline=5))
""".replace("TENANT_SOURCE", repr(programs.NAPPER))


def test_a_dispatcher_module_is_the_only_source_of_tenant_code(tmp_path: Path) -> None:
    module = tmp_path / "platform_dispatcher.py"
    module.write_text(DISPATCHER)
    daemon = DaemonProcess(tmp_path, dispatcher=str(module))
    write_tenant(daemon.tenants, "beta", main=programs.ECHO)  # ignored: the dispatcher decides
    daemon.start()
    try:
        created = daemon.post("/alpha/", {"n": 1, "nap": "1 second"}).json()
        assert daemon.wait_for("alpha", created["id"], "complete")["output"] == {"first": 2}
        assert daemon.get("/beta/").status == 404
        wrong = daemon.get("/wrong/")
        assert wrong.status == 404 and "not a WorkerCode" in wrong.json()["message"]
        put = daemon.api("PUT", "/_/tenants/alpha", {"modules": {"main": programs.ECHO}})
        assert put.status == 409 and str(module) in put.json()["message"]
        assert daemon.get("/alpha/").status == 200  # unaffected by the refusals
    finally:
        assert daemon.stop() == 0


def test_a_broken_dispatcher_module_stops_the_start_with_its_error(tmp_path: Path) -> None:
    module = tmp_path / "typo.py"
    module.write_text("def load(tenant_id:\n")
    daemon = DaemonProcess(tmp_path, dispatcher=str(module))
    with pytest.raises(AssertionError, match="exited 2"):
        daemon.start(timeout=20)
    assert "dispatcher module" in daemon.log() and "SyntaxError" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_an_unknown_setting_stops_the_start_naming_it(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, spaers=2)
    with pytest.raises(AssertionError, match="exited 2"):
        daemon.start(timeout=20)
    assert "unknown setting 'spaers'" in daemon.log() and "DYNWORKERS_SPAERS" in daemon.log()
