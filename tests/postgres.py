"""A real PostgreSQL server for the tests: found on this machine, started, stopped by pid.

Runs in the pytest process. `PostgresServer.start()` finds the server binaries (on PATH, else the
newest `/usr/lib/postgresql/*/bin`), runs `initdb` in a fresh temporary directory and starts
`postgres` on a port the OS picked, listening on 127.0.0.1 and on a unix socket inside that
directory, with fsync on (as in production: the group-commit figures mean something). PostgreSQL
refuses to run as root, so under root the directory is given to `nobody` and both commands run as
that user. `stop()` asks `pg_ctl stop -m fast`, kills the postmaster by pid if it is still there,
and removes the directory.

`missing()` says why no server can be started (no binaries, no psycopg); the fixtures in
tests/conftest.py skip on that locally and fail under `CI=true`, where the tests must run.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: the unprivileged user the server runs as when the tests run as root
SERVER_USER = "nobody"
#: guards against a hang only; a cold initdb on a busy machine takes a few seconds
START_TIMEOUT_S = 60.0


def find_binaries() -> Path | None:
    """The directory holding initdb, postgres and pg_ctl, or None."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb") and shutil.which("postgres"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
    )
    for candidate in reversed(candidates):
        if all((Path(candidate) / name).exists() for name in ("initdb", "postgres", "pg_ctl")):
            return Path(candidate)
    return None


def missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    if find_binaries() is None:
        return (
            "no PostgreSQL server binaries (initdb, postgres, pg_ctl) on PATH or in "
            "/usr/lib/postgresql/*/bin: apt-get install postgresql"
        )
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg or psycopg_pool is not installed: pip install -e '.[test]'"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        binaries = find_binaries()
        if binaries is None:
            raise RuntimeError(missing())
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="dw-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._user: dict[str, object] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            cwd=self.root,
            capture_output=True,
            timeout=START_TIMEOUT_S,
            check=False,
            **self._user,  # type: ignore[arg-type]
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{command[0]} failed ({done.returncode}):\n{output}")

    def start(self) -> PostgresServer:
        # trust on loopback and the private socket: the server lives as long as the test session
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.port = free_port()
        self._spawn()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited {self.process.returncode}:\n{self.log()}")
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not accept connections:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            # FORCE: a connection a failed test left open must not keep the database alive
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL by pid) and remove its directory."""
        try:
            if self.process is not None and self.process.poll() is None:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(self.process.pid, signal.SIGKILL)
                    self.process.wait()
        finally:
            self.process = None
            shutil.rmtree(self.root, ignore_errors=True)

    # --- faults the tests inject -----------------------------------------------------------------

    def crash(self) -> None:
        """Stop the server the way a crash does (immediate shutdown: no checkpoint, every
        connection cut): the database is lost until `restart()`, which runs crash recovery."""
        assert self.process is not None
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        self.process.wait(timeout=START_TIMEOUT_S)
        self.process = None

    def restart(self) -> None:
        """Start the server again on the same port and data."""
        self._spawn()
        self._wait_ready()

    def _spawn(self) -> None:
        command = [
            str(self.bin / "postgres"),
            "-D", str(self.data),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-k", str(self.root),
            "-c", "max_connections=300",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest does not reach it first
                **self._user,  # type: ignore[arg-type]
            )
