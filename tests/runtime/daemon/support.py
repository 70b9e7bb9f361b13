"""A real `dynworkers serve` in a subprocess, and HTTP to it, for the daemon's tests.

`DaemonProcess` starts the daemon on ports the OS picks (port 0) with its own state directory,
waits for `<state_dir>/daemon.json` and /healthz, and stops it with a signal; `stop()` returns
the exit status, and the daemon's log is kept in a file beside the state directory. Waiting loops
have timeouts that only guard against hangs; no test asserts a duration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

SOURCE_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = SOURCE_ROOT / "examples" / "tenants"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:300]!r}>"


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Answer:
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Answer(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


class DaemonProcess:
    def __init__(self, root: Path, tenants: Path | None = None, **settings: Any) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.tenants = tenants if tenants is not None else root / "tenants"
        self.settings = {"spares": 1, "max_sandboxes": 8, "deadline": 5.0, **settings}
        self.log_path = root / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.front = self.control = ""
        self.environ: dict[str, str] = {}  # extra environment for the daemon process

    def start(self, timeout: float = 30.0) -> DaemonProcess:
        self.tenants.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "daemon.json").unlink(missing_ok=True)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DYNWORKERS_")}
        environ.update({f"DYNWORKERS_{k.upper()}": str(v) for k, v in self.settings.items()})
        environ["PYTHONPATH"] = str(SOURCE_ROOT)
        environ.update(self.environ)
        command = [
            sys.executable, "-m", "dynworkers.runtime.cli", "serve",
            "--tenants", str(self.tenants), "--state-dir", str(self.state_dir),
            "--port", "0", "--control-port", "0",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.root, env=environ, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        ready = self.state_dir / "daemon.json"
        while not ready.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"the daemon exited {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not start:\n{self.log()}")
            time.sleep(0.05)
        where = json.loads(ready.read_text())
        self.front, self.control = where["front"], where["control"]
        assert http("GET", self.control + "/healthz").status == 200
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, **options: Any) -> Answer:
        return http("GET", self.front + path, **options)

    def post(self, path: str, body: Any = None, **options: Any) -> Answer:
        return http("POST", self.front + path, body, **options)

    def api(self, method: str, path: str, body: Any = None, **options: Any) -> Answer:
        return http(method, self.control + path, body, **options)

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the daemon and wait; every process it started must be gone after."""
        if self.process is None:
            return 0
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the daemon ignored signal {signum}:\n{self.log()}") from None
        finally:
            self.process = None
        _gone, alive = psutil.wait_procs(descendants, timeout=5)
        for process in alive:
            process.kill()
        assert not alive, f"the daemon left processes behind: {alive}"
        return code

    def wait_for(self, tenant: str, instance: str, *statuses: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            answer = self.api("GET", f"/_/tenants/{tenant}/workflows/{instance}").json()
            if answer.get("status") in statuses:
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"{tenant}/{instance} stayed {answer}, expected {statuses}")
            time.sleep(0.05)


def write_tenant(root: Path, tenant: str, **modules: str) -> Path:
    folder = root / tenant
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.py"):
        stale.unlink()
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    return folder
