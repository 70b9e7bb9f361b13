"""An instance's history through the control API and the CLI, from a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.runtime.daemon.support import DaemonProcess, write_tenant
from tests.tenants import daemon as programs


def test_history_is_served_by_the_control_api_and_printed_by_the_cli(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    write_tenant(daemon.tenants, "napper", main=programs.NAPPER)
    daemon.start()
    try:
        base = "/_/tenants/napper/workflows"
        created = daemon.api("POST", base, {"id": "h1", "params": {"n": 1, "nap": 10}})
        assert created.status == 201, created
        daemon.wait_for("napper", "h1", "complete")
        answer = daemon.api("GET", "/_/tenants/napper/instances/h1/history")
        assert answer.status == 200, answer
        view = answer.json()
        assert view["id"] == "h1" and view["status"] == "complete"
        (first,) = [s for s in view["steps"] if s["name"] == "first"]
        assert [a["outcome"] for a in first["attempts"]] == ["complete"]
        assert [e["kind"] for e in view["timeline"]][-1] == "complete"
        missing = daemon.api("GET", "/_/tenants/napper/instances/nope/history")
        assert missing.status == 404, missing

        command = [sys.executable, "-m", "dynworkers.runtime.cli", "workflows", "history"]
        url = ["--url", daemon.control]
        printed = subprocess.run(
            [*command, "napper", "h1", *url], capture_output=True, text=True, timeout=60
        )
        assert printed.returncode == 0, printed.stderr
        assert "first#1" in printed.stdout and "complete" in printed.stdout
        raw = subprocess.run(
            [*command, "napper", "h1", "--json", *url], capture_output=True, text=True, timeout=60
        )
        assert raw.returncode == 0, raw.stderr
        assert json.loads(raw.stdout)["steps"][0]["name"] == "first"
    finally:
        assert daemon.stop() == 0
