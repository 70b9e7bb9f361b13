"""A full or read-only state directory, on a real tmpfs: refused at start with one line, and
answered 503 (with /readyz saying why) while serving, until the disk takes writes again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.support import fill, remount, tmpfs
from tests.faults.test_one_owner import serve
from tests.runtime.daemon.support import DaemonProcess, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(180)

WORKFLOWS = "/_/tenants/napper/workflows"


def test_full_disk_answers_503_with_the_reason_and_readyz_says_not_writable(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    write_tenant(daemon.tenants, "napper", main=programs.NAPPER)
    with tmpfs(daemon.state_dir, "64m"):
        daemon.start()
        try:
            created = daemon.api("POST", WORKFLOWS, {"params": {"n": 3, "nap": "1 hour"}})
            assert created.status == 201, created
            instance = created.json()["id"]
            assert daemon.api("GET", "/readyz").status == 200

            filler = fill(daemon.state_dir)
            answers = {
                "create": daemon.api("POST", WORKFLOWS, {"params": {"n": 1}}),
                "send-event": daemon.api(
                    "POST", f"{WORKFLOWS}/{instance}/events", {"type": "go", "payload": 1}
                ),
                "deploy": daemon.api(
                    "PUT", "/_/tenants/fresh", {"modules": {"main": programs.ECHO * 50}}
                ),
            }
            for name, answer in answers.items():
                assert answer.status == 503, (name, answer)
                assert answer.json()["error"] == "StoreUnavailable", (name, answer)
            ready = daemon.api("GET", "/readyz")
            assert ready.status == 503
            assert "not writable" in ready.json()["store"]
            assert daemon.api("GET", "/healthz").status == 200  # alive, only not ready

            filler.unlink()
            assert daemon.api("GET", "/readyz").status == 200
            again = daemon.api("POST", WORKFLOWS, {"params": {"n": 1, "nap": "1 hour"}})
            assert again.status == 201, again
        finally:
            code = daemon.stop()
    assert code == 0
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_starting_on_a_full_or_read_only_state_directory_exits_2_with_one_line(
    tmp_path: Path, fault: str
) -> None:
    daemon = DaemonProcess(tmp_path)
    daemon.tenants.mkdir(parents=True)
    with tmpfs(daemon.state_dir, "8m"):
        if fault == "full":
            fill(daemon.state_dir)
        else:
            remount(daemon.state_dir, "ro")
        started = serve(daemon)
    assert started.returncode == 2, started.stderr
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    expected = "No space left" if fault == "full" else "Read-only"
    assert expected in lines[0] and "--state-dir" in lines[0], lines[0]
