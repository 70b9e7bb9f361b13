"""One owner per state directory: a second daemon or Supervisor refuses to start, naming the
running pid; a daemon killed with SIGKILL leaves nothing that stops or litters the next start."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
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


def run_dirs(root: Path) -> set[str]:
    return {str(p) for p in root.glob(f"{RUN_PREFIX}*") if (p / RUN_OWNER).exists()}


def test_after_kill_9_the_next_start_takes_the_directory_and_removes_stale_run_dirs(
    tmp_path: Path,
) -> None:
    # a temporary directory of its own: any Supervisor starting on the machine removes stale
    # run directories it can see, and this test wants to see the next start do it
    temporary = Path(tempfile.mkdtemp(prefix="dwt"))  # short: socket paths live under it
    daemon = DaemonProcess(tmp_path)
    daemon.environ["TMPDIR"] = str(temporary)
    write_tenant(daemon.tenants, "echo", main=programs.ECHO)
    try:
        pid = daemon.start().pid
        try:
            mine = run_dirs(temporary)
            owners = {(Path(d) / RUN_OWNER).read_text().strip() for d in mine}
        finally:
            daemon.stop(signal.SIGKILL)
        assert len(mine) == 1 and owners == {str(pid)}, "the run directory names its owner"
        (stale,) = mine
        assert Path(stale).exists(), "SIGKILL left the run directory behind"
        daemon.start()
        try:
            assert not Path(stale).exists(), "the next start removed it"
            assert daemon.get("/echo/hello").status == 200
        finally:
            assert daemon.stop() == 0
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


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
