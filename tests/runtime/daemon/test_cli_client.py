"""The CLI and the public control client against a real daemon: finding it (DYNWORKERS_URL,
daemon.json), the token's refusal, exit codes by kind, errors as JSON, tenants delete, init,
--version, serve's flags and start-up errors, forwarded headers, and the messages that must not
contradict themselves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dynworkers import AsyncControlClient, ControlClient
from dynworkers.runtime.daemon import ControlNotFound, ControlUnavailable
from tests.conftest import SHARED_DAEMONS
from tests.runtime.daemon.support import SOURCE_ROOT, DaemonProcess, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(120)
TOKEN = "s3cret"


def cli(cwd: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """`dynworkers ARGS` with no DYNWORKERS_* variable but those given."""
    env = {"PYTHONPATH": str(SOURCE_ROOT), "PATH": "/usr/bin:/bin", **environ}
    return subprocess.run(
        [sys.executable, "-m", "dynworkers.runtime.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("cli")
    daemon = DaemonProcess(root, control_token=TOKEN)
    write_tenant(daemon.tenants, "app", main=programs.ECHO)
    assert cli(root, "init", "flow", "--dir", str(daemon.tenants)).returncode == 0
    daemon.start()
    SHARED_DAEMONS.add(daemon.pid)
    try:
        yield daemon
    finally:
        SHARED_DAEMONS.discard(daemon.pid)
        assert daemon.stop() == 0


def test_the_cli_finds_the_daemon_through_daemon_json_and_dynworkers_url(
    served: DaemonProcess,
) -> None:
    # started on port 0: only daemon.json knows where it listens
    found = cli(
        served.root, "tenants", "list",
        DYNWORKERS_STATE_DIR=str(served.state_dir), DYNWORKERS_CONTROL_TOKEN=TOKEN,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert "app" in found.stdout and "flow" in found.stdout
    through_url = cli(served.root, "stats", "--token", TOKEN, DYNWORKERS_URL=served.control)
    assert through_url.returncode == 0, through_url.stderr
    assert through_url.stdout.splitlines()[0].strip(), "the first line of stats is blank"
    assert through_url.stdout.splitlines()[0].startswith("sandboxes")


def test_a_refused_token_says_so_and_where_it_came_from(served: DaemonProcess) -> None:
    wrong = cli(served.root, "tenants", "list", "--url", served.control, "--token", "nope")
    assert wrong.returncode == 5
    assert "refused" in wrong.stderr and "--token" in wrong.stderr
    assert "Bearer <control_token>" not in wrong.stderr
    from_env = cli(
        served.root, "tenants", "list", "--url", served.control, DYNWORKERS_CONTROL_TOKEN="nope"
    )
    assert from_env.returncode == 5 and "DYNWORKERS_CONTROL_TOKEN" in from_env.stderr
    missing = cli(served.root, "tenants", "list", "--url", served.control)
    assert missing.returncode == 5 and "none was sent" in missing.stderr


def test_exit_codes_by_kind_and_errors_as_json(served: DaemonProcess) -> None:
    base = ("--url", served.control, "--token", TOKEN)
    bogus = cli(served.root, "workflows", "list", "app", "--status", "bogus", *base)
    assert bogus.returncode == 2 and "no instance status 'bogus'" in bogus.stderr
    missing = cli(served.root, "workflows", "status", "app", "no-such-id", *base)
    assert missing.returncode == 3 and "no workflow instance" in missing.stderr
    as_json = cli(served.root, "workflows", "status", "app", "no-such-id", "--json", *base)
    assert as_json.returncode == 3
    answer = json.loads(as_json.stdout)
    assert answer["kind"] == "not_found" and answer["status"] == 404
    assert answer["error"] == "InstanceNotFound" and "no-such-id" in answer["message"]
    bad_json = cli(served.root, "workflows", "create", "flow", "--params", "{x", "--json", *base)
    assert bad_json.returncode == 2 and json.loads(bad_json.stdout)["kind"] == "invalid"
    nobody = cli(served.root, "stats", "--url", "http://127.0.0.1:9", "--json")
    assert nobody.returncode == 4 and json.loads(nobody.stdout)["kind"] == "unavailable"


def test_workflows_create_is_refused_for_a_tenant_without_a_workflow_class(
    served: DaemonProcess,
) -> None:
    refused = cli(served.root, "workflows", "create", "app", "--url", served.control,
                  "--token", TOKEN)  # fmt: skip
    assert refused.returncode == 2
    assert "has no workflow class" in refused.stderr and "TenantWorkflow" in refused.stderr
    listed = ControlClient(served.control, TOKEN).instances("app")
    assert listed["instances"] == []  # nothing was created


def test_a_first_deploy_that_fails_does_not_claim_an_older_version_serves(
    served: DaemonProcess,
) -> None:
    client = ControlClient(served.control, TOKEN)
    with pytest.raises(ValueError, match="nothing was deployed") as failed:
        client.deploy("fresh", {"main": programs.BROKEN})
    assert "keeps serving" not in str(failed.value)
    with pytest.raises(ValueError, match="keeps serving"):
        client.deploy("app", {"main": programs.BROKEN})


def test_the_async_client_runs_the_init_template_to_complete(served: DaemonProcess) -> None:
    async def main() -> dict[str, Any]:
        async with AsyncControlClient(served.control, TOKEN) as client:
            created = await client.create("flow", {"who": "ana"})
            for _ in range(600):
                status: dict[str, Any] = await client.status("flow", created["id"])
                if status["status"] in ("complete", "errored"):
                    return status
                await asyncio.sleep(0.05)
            raise AssertionError(f"the instance stayed {status}")

    status = asyncio.run(main())
    assert status["status"] == "complete", status
    assert status["output"] == {"greeting": "hello, ana"}
    visits = served.get("/flow/").json()
    assert visits == {"tenant": "flow", "visits": 1}


def test_tenants_delete_stops_serving_a_tenant(served: DaemonProcess) -> None:
    client = ControlClient(served.control, TOKEN)
    client.deploy("gone", {"main": programs.ECHO})
    assert served.get("/gone/").status == 200
    deleted = cli(served.root, "tenants", "delete", "gone", "--url", served.control,
                  "--token", TOKEN)  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.startswith("deleted gone")
    assert served.get("/gone/").status == 404
    with pytest.raises(ControlNotFound):
        client.delete_tenant("gone")
    assert "gone" not in [t["tenant"] for t in client.tenants()["tenants"]]


def test_a_reload_names_the_folders_it_could_not_deploy(served: DaemonProcess) -> None:
    write_tenant(served.tenants, "Not_A_Tenant", main=programs.ECHO)
    try:
        mark = served.log().count("reloaded:")
        served.send(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while served.log().count("reloaded:") == mark:
            assert time.monotonic() < deadline, served.log()
            time.sleep(0.05)
        line = served.log().split("reloaded:")[-1].splitlines()[0]
        assert "not deployed: Not_A_Tenant" in line and "none" not in line
    finally:
        for file in (served.tenants / "Not_A_Tenant").iterdir():
            file.unlink()
        (served.tenants / "Not_A_Tenant").rmdir()


def test_the_client_says_how_to_start_a_daemon_when_none_answers() -> None:
    with pytest.raises(ControlUnavailable, match="dynworkers serve"):
        ControlClient("http://127.0.0.1:9").stats()


def test_version_init_and_serve_help(tmp_path: Path) -> None:
    version = cli(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("dynworkers ")
    made = cli(tmp_path, "init", "hello")
    assert made.returncode == 0, made.stderr
    wrangler = (tmp_path / "hello" / "wrangler.jsonc").read_text()
    assert '"main": "main.py"' in wrangler and '"name": "hello"' in wrangler
    assert "compatibility_date" in wrangler
    assert "class TenantWorkflow" in (tmp_path / "hello" / "main.py").read_text()
    again = cli(tmp_path, "init", "hello")
    assert again.returncode == 2 and "not empty" in again.stderr
    assert cli(tmp_path, "init", "Bad_Name").returncode == 2
    helped = cli(tmp_path, "serve", "--help").stdout
    for flag, variable in (
        ("--tenants", "DYNWORKERS_TENANTS"),
        ("--host", "DYNWORKERS_HOST"),
        ("--port", "DYNWORKERS_PORT"),
        ("--state-dir", "DYNWORKERS_STATE_DIR"),
        ("--control-host", "DYNWORKERS_CONTROL_HOST"),
        ("--control-port", "DYNWORKERS_CONTROL_PORT"),
        ("--store", "DYNWORKERS_STORE"),
        ("--config", "DYNWORKERS_CONFIG"),
    ):
        assert flag in helped and variable in " ".join(helped.split()), flag


def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        (tmp_path / "tenants").mkdir()
        ran = cli(
            tmp_path, "serve", "--tenants", "tenants", "--state-dir", "state",
            "--port", str(port), "--control-port", "0", DYNWORKERS_SPARES="0",
        )  # fmt: skip
    finally:
        holder.close()
    assert ran.returncode == 2
    assert "Traceback" not in ran.stderr
    refusals = [line for line in ran.stderr.splitlines() if line.startswith("dynworkers:")]
    assert len(refusals) == 1, ran.stderr
    assert f"127.0.0.1:{port}" in refusals[0] and "DYNWORKERS_PORT" in refusals[0]


def test_forwarded_headers_reach_the_url_only_when_trusted(tmp_path: Path) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com"}
    for trusted, expected in (("1", "https://api.example.com/x"), ("0", None)):
        daemon = DaemonProcess(tmp_path / trusted, trust_forwarded=trusted)
        write_tenant(daemon.tenants, "app", main=programs.ECHO)
        daemon.start()
        try:
            url = daemon.get("/app/x", headers=forwarded).json()["url"]
            if expected is None:
                assert url.startswith("http://127.0.0.1:") and url.endswith("/x")
            else:
                assert url == expected
            plain = daemon.get("/app/x").json()["url"]
            assert plain.startswith("http://127.0.0.1:")
            forged = daemon.get("/app/x", headers={"X-Forwarded-Host": "a b/c"}).json()["url"]
            assert forged.startswith("http://127.0.0.1:")
        finally:
            assert daemon.stop() == 0
    assert os.environ.get("DYNWORKERS_TRUST_FORWARDED") is None


def test_a_deploy_that_imports_what_the_sandbox_refuses_is_422_naming_it(
    served: DaemonProcess, tmp_path: Path
) -> None:
    folder = write_tenant(
        tmp_path, "needs-requests", main="import requests\nfrom workers import Response\n"
    )
    put = cli(served.root, "tenants", "put", "needs-requests", str(folder),
              "--url", served.control, "--token", TOKEN)  # fmt: skip
    assert put.returncode == 2, put.stdout
    assert "module 'requests' is not allowed" in put.stderr and "main:1" in put.stderr
    assert "json" in put.stderr  # what is allowed
    assert served.get("/needs-requests/").status == 404  # nothing was deployed
