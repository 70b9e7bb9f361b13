"""One owner per state directory: a second daemon or Supervisor refuses to start, naming the
running pid; a daemon killed with SIGKILL leaves nothing that stops or litters the next start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dynworkers.engine import Engine
from dynworkers.runtime import StateDirInUse, Supervisor, SupervisorConfig
from dynworkers.runtime.state_dir import RUN_OWNER, RUN_PREFIX
from tests.runtime.daemon.support import SOURCE_ROOT, DaemonProcess, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(120)


def serve(daemon: DaemonProcess, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """A second `dynworkers serve` on `daemon`'s state directory, run to its exit."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DYNWORKERS_")}
    environ["PYTHONPATH"] = str(SOURCE_ROOT)
    command = [
        sys.executable, "-m", "dynworkers.runtime.cli", "serve",
        "--tenants", str(daemon.tenants), "--state-dir", str(daemon.state_dir),
        "--port", "0", "--control-port", "0",
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=daemon.root, env=environ, capture_output=True, text=True, timeout=timeout
    )


def test_a_second_daemon_on_a_state_directory_in_use_exits_2_naming_the_owner(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path)
    write_tenant(daemon.tenants, "echo", main=programs.ECHO)
    daemon.start()
    try:
        where = (daemon.state_dir / "daemon.json").read_text()
        second = serve(daemon)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"in use by process {daemon.pid}" in lines[0]
        assert "Traceback" not in second.stderr
        # the first daemon's address file is untouched, and it still serves
        assert (daemon.state_dir / "daemon.json").read_text() == where
        assert daemon.get("/echo/hello").status == 200
    finally:
        assert daemon.stop() == 0
    assert not (daemon.state_dir / "daemon.json").exists()


def run_dirs() -> set[str]:
    root = Path(tempfile.gettempdir())
    return {str(p) for p in root.glob(f"{RUN_PREFIX}*") if (p / RUN_OWNER).exists()}


def owner_of(run_dir: str) -> str:
    """The pid a run directory names; "" when it went away meanwhile (another test's process
    closed: run directories of every process on the machine share the temporary directory)."""
    try:
        return (Path(run_dir) / RUN_OWNER).read_text().strip()
    except FileNotFoundError:
        return ""


def test_after_kill_9_the_next_start_takes_the_directory_and_removes_stale_run_dirs(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path)
    write_tenant(daemon.tenants, "echo", main=programs.ECHO)
    before = run_dirs()
    daemon.start()
    try:
        mine = {d for d in run_dirs() - before if owner_of(d) == str(daemon.pid)}
    finally:
        daemon.stop(signal.SIGKILL)
    assert len(mine) == 1, "the daemon's run directory names its owner"
    (stale,) = mine
    assert Path(stale).exists(), "SIGKILL left the run directory behind"
    daemon.start()
    try:
        assert not Path(stale).exists(), "the next start removed it"
        assert daemon.get("/echo/hello").status == 200
    finally:
        assert daemon.stop() == 0


def test_a_second_supervisor_in_this_process_is_refused_and_an_engine_shares_the_first(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        config = SupervisorConfig(state_dir=tmp_path, spares=0)
        async with Supervisor(config) as sup, Engine(sup):
            second = Supervisor(config)
            with pytest.raises(StateDirInUse, match=f"in use by process {os.getpid()}"):
                await second.start()
            await second.close()
        # the first one gave the directory up when it closed
        async with Supervisor(config):
            pass

    asyncio.run(main())


def test_daemon_json_is_removed_only_by_the_daemon_it_names(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    daemon.start()
    try:
        where = daemon.state_dir / "daemon.json"
        data = json.loads(where.read_text())
        assert data["pid"] == daemon.pid
        where.write_text(json.dumps({**data, "pid": 1}))  # as if another daemon had written it
    finally:
        assert daemon.stop() == 0
    assert where.exists()
