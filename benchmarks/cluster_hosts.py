"""The machinery of `benchmarks.cluster`: a PostgreSQL server, `dynworkers serve` daemons, and
reads of their store.

Runs in the benchmark's process. `Daemon` starts one `python -m dynworkers.runtime.cli serve` on
ports the OS picks, with its own state directory and host id and the settings of
tests/runtime/daemon/test_several_hosts.py (lease 3 s, poll every 0.5 s), and waits for its
`daemon.json`; `kill9()` SIGKILLs it (and then every process it had started, by pid, once they
had a moment to notice) and `stop()` sends SIGTERM, then SIGKILLs whatever is left. `cluster()`
starts N daemons on one store and stops every one of them on every exit path.

`Store` reads what the daemons wrote, from the benchmark's side: which instances finished and
when (the engine's own `updated` time, epoch seconds), how many are in each status, who owns
an instance, a host's lease. It reads PostgreSQL through psycopg and a SQLite daemon's
`engine.db` directly (WAL: the reader never blocks the daemon's writer).

The server is tests/postgres.py's `PostgresServer` (initdb in a temporary directory, a port the
OS picks, fsync on): `import tests` works because the benchmark runs from the repository root.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
TENANTS = 5
#: the settings tests/runtime/daemon/test_several_hosts.py runs its clusters with
SETTINGS = {"lease": 3.0, "poll_interval": 0.5, "spares": 1, "max_sandboxes": 10}
START_TIMEOUT_S = 60.0
FINISHED = ("complete", "errored", "terminated")
#: Every tenant runs this: `steps` trivial steps; `hold`: first one step that awaits that many
#: seconds (an instance that is running, owned by its host, when the host is killed); `until`:
#: then `step.sleep_until` that epoch-ms time.
TENANT_SRC = """
import asyncio
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        p = event.payload
        if p.get("hold"):
            async def hold():
                await asyncio.sleep(p["hold"])
                return 0
            step.do("hold", hold, config={"timeout": "1 hour", "retries": {"limit": 0}})
        x = 0
        for i in range(p.get("steps", 0)):
            x = step.do("add_one", lambda: x + 1)
        if p.get("until"):
            step.sleep_until("nap", p["until"])
        return x
"""


def write_tenants(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "main.py").write_text(TENANT_SRC)
    return root


def start_postgres() -> Any:
    """tests/postgres.py's server, started (run from the repository root); or RuntimeError."""
    sys.path.insert(0, str(ROOT))
    server = importlib.import_module("tests.postgres")  # test code: not type checked here
    why = server.missing()
    if why:
        raise RuntimeError(f"no PostgreSQL for the cluster benchmark: {why}")
    return server.PostgresServer().start()


class Daemon:
    def __init__(self, root: Path, tenants: Path, store: str, host_id: str) -> None:
        self.root, self.tenants, self.host_id = root, tenants, host_id
        self.state_dir = root / "state"
        self.settings = {**SETTINGS, "store": store, "host_id": host_id}
        self.process: subprocess.Popen[bytes] | None = None
        self.control = ""
        #: what a SIGKILLed daemon had started, reaped by `stop()`
        self._orphans: list[psutil.Process] = []

    def start(self) -> Daemon:
        """Start the process; `ready()` waits for it."""
        self.root.mkdir(parents=True, exist_ok=True)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DYNWORKERS_")}
        environ.update({f"DYNWORKERS_{k.upper()}": str(v) for k, v in self.settings.items()})
        environ["PYTHONPATH"] = str(ROOT)
        command = [
            sys.executable, "-m", "dynworkers.runtime.cli", "serve",
            "--tenants", str(self.tenants), "--state-dir", str(self.state_dir),
            "--port", "0", "--control-port", "0",
        ]  # fmt: skip
        with (self.root / "daemon.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.root, env=environ, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def ready(self) -> Daemon:
        assert self.process is not None
        where, deadline = self.state_dir / "daemon.json", time.monotonic() + START_TIMEOUT_S
        while not where.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "daemon.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"daemon {self.host_id} did not start:\n{log}")
            time.sleep(0.05)
        self.control = json.loads(where.read_text())["control"]
        return self

    def _descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            assert self.process is not None
            children: list[psutil.Process] = psutil.Process(self.process.pid).children(True)
            return children
        return []

    def kill9(self) -> float:
        """SIGKILL the daemon; the epoch time of the kill. Its children are reaped later."""
        assert self.process is not None
        self._orphans = self._descendants()
        killed = time.time()
        self.process.kill()
        self.process.wait()
        return killed

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL to the daemon and every process it started, by pid."""
        if self.process is None:
            return
        family = self._descendants() + self._orphans
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        _, alive = psutil.wait_procs(family, timeout=3.0)
        for leftover in alive:
            with contextlib.suppress(psutil.Error):
                leftover.kill()


@contextlib.contextmanager
def cluster(
    store: str, size: int, tenants: list[str], start: int | None = None
) -> Iterator[list[Daemon]]:
    """`size` daemons on `store` (the first `start` of them started and ready; default all),
    each with its own state directory; all stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="dw-cluster-") as tmp:
        code = write_tenants(Path(tmp) / "tenants", tenants)
        daemons = [Daemon(Path(tmp) / f"host{n}", code, store, f"host{n}") for n in range(size)]
        try:
            launch(daemons[: size if start is None else start])
            yield daemons
        finally:
            for daemon in daemons:
                daemon.stop()


def launch(daemons: list[Daemon]) -> float:
    """Start the daemons at once, wait until all are ready; the seconds it took."""
    t0 = time.perf_counter()
    for daemon in daemons:
        daemon.start()
    for daemon in daemons:
        daemon.ready()
    return time.perf_counter() - t0


class Store:
    """Reads of a daemon's store: `url` is postgresql://..., or sqlite:///path/engine.db."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql://")
        if self.postgres:
            import psycopg

            self.pg = psycopg.connect(url, autocommit=True)
        else:
            path = url.removeprefix("sqlite:///")
            self.lite = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.lite.execute("PRAGMA busy_timeout=5000")

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.postgres:
            return self.pg.execute(sql.replace("?", "%s"), params).fetchall()
        return self.lite.execute(sql, params).fetchall()

    def finished(self, ids: list[str]) -> list[tuple[str, str, float]]:
        """(id, status, updated) of those of `ids` that finished."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return [
            (str(i), str(s), float(u))
            for i, s, u in self.query(
                f"SELECT id, status, updated FROM instances WHERE id IN ({marks}) "
                "AND status IN ('complete', 'errored', 'terminated')",
                *ids,
            )
        ]

    def counts(self) -> dict[str, int]:
        return {
            str(s): int(n)
            for s, n in self.query("SELECT status, COUNT(*) FROM instances GROUP BY status")
        }

    def owners(self, ids: list[str]) -> dict[str, str | None]:
        marks = ",".join("?" * len(ids))
        rows = self.query(f"SELECT id, owner FROM instances WHERE id IN ({marks})", *ids)
        return {str(i): o for i, o in rows}

    def close(self) -> None:
        (self.pg if self.postgres else self.lite).close()
