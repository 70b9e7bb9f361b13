"""Workers written exactly as Cloudflare's Python Workers and Python Workflows documentation
writes them (examples/cloudflare/: hello world, a KV binding named in wrangler.jsonc, a cron
worker, a workflow started from fetch and read back with status()), each a worker directory
with its wrangler file, served by `dynworkers serve` and by `dynworkers dev`."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.runtime.daemon.support import SOURCE_ROOT, Answer, DaemonProcess, http

WORKERS = SOURCE_ROOT / "examples" / "cloudflare"
TEXT = "text/plain;charset=UTF-8"
#: guards against a hang only
WAIT_S = 30.0


def ctype(answer: Answer) -> str:
    return {k.lower(): v for k, v in answer.headers.items()}.get("content-type", "")


def until(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- dynworkers serve ----------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    tenants = tmp_path / "tenants"
    for worker in ("hello", "kv", "cron", "workflow"):
        shutil.copytree(WORKERS / worker, tenants / worker)
    process = DaemonProcess(tmp_path, tenants).start()
    try:
        yield process
    finally:
        process.stop()


def test_hello_world_kv_and_a_workflow_run_as_written_under_serve(daemon: DaemonProcess) -> None:
    hello = daemon.get("/hello/")
    assert (hello.status, hello.body, ctype(hello)) == (200, b"Hello world!", TEXT)
    kv = daemon.get("/kv/")
    assert (kv.status, kv.body, ctype(kv)) == (200, b"baz", TEXT)
    started = daemon.get("/workflow/")
    assert started.status == 200 and ctype(started) == "application/json"
    instance = started.json()["id"]
    assert started.json()["details"]["status"] in ("queued", "running", "complete")

    def complete() -> bool:
        answer = daemon.get(f"/workflow/?instanceId={instance}")
        assert answer.status == 200 and ctype(answer) == "application/json"
        return bool(answer.json()["status"]["status"] == "complete")

    until(complete, "the workflow to complete")
    assert "executing step1" in daemon.log() and "executing step2" in daemon.log()
    unsupported = [line for line in daemon.log().splitlines() if "does not support" in line]
    assert unsupported == []  # the documentation's files hold only keys dynworkers reads


def test_a_cron_tick_missed_while_down_runs_once_at_start(daemon: DaemonProcess) -> None:
    """The schedule was first seen at the first start; the clock is moved by moving that record
    back an hour while the daemon is down: the latest missed tick runs once at the next start."""
    assert daemon.stop() == 0
    assert "cron processed" not in daemon.log()  # a new schedule starts at its next tick
    with sqlite3.connect(daemon.state_dir / "crons.db") as db:
        db.execute("UPDATE cron_schedules SET since_ms = since_ms - 3600000 WHERE tenant='cron'")
        db.execute("DELETE FROM cron_ticks")
    db.close()
    daemon.start()
    until(lambda: "cron processed" in daemon.log(), "the missed tick to run")
    with sqlite3.connect(daemon.state_dir / "crons.db") as db:
        ticks = db.execute("SELECT cron, scheduled_ms FROM cron_ticks").fetchall()
    db.close()
    assert len(ticks) in (1, 2)  # the missed one, and perhaps a minute that just began
    assert ticks[0][0] == "* * * * *" and ticks[0][1] % 60_000 == 0
    assert daemon.log().count("cron processed") == len(ticks)


# --- dynworkers dev ------------------------------------------------------------------------------


class DevProcess:
    """`dynworkers dev DIR --port 0`, its output read line by line as it comes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DYNWORKERS_")}
        environ["PYTHONPATH"] = str(SOURCE_ROOT)
        command = [sys.executable, "-m", "dynworkers.runtime.cli", "dev", str(folder)]
        self.process = subprocess.Popen(
            [*command, "--port", "0"],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""
        until(self._ready, "the ready line")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))

    def output(self) -> str:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return "\n".join(self.lines)

    def _ready(self) -> bool:
        for line in self.output().splitlines():
            if line.startswith("ready on "):
                self.url = line.removeprefix("ready on ")
                return True
        if self.process.poll() is not None:
            raise AssertionError(f"dynworkers dev exited:\n{self.output()}")
        return False

    def stop(self) -> int:
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(WAIT_S)
        self._reader.join(WAIT_S)  # the pipe ends with the process
        assert self.process.stdout is not None
        self.process.stdout.close()
        _gone, alive = psutil.wait_procs(children, timeout=5)
        for process in alive:
            process.kill()
        assert not alive, f"dynworkers dev left processes behind: {alive}"
        return code


@pytest.fixture
def dev(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevProcess]:
    folder = tmp_path / request.param
    shutil.copytree(WORKERS / request.param, folder)
    process = DevProcess(folder)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


@pytest.mark.parametrize("dev", ["hello"], indirect=True)
def test_dev_serves_at_the_root_and_reloads_on_change(dev: DevProcess) -> None:
    for path in ("/", "/any/path?x=1"):
        answer = http("GET", dev.url + path)
        assert (answer.status, answer.body) == (200, b"Hello world!")
        assert ctype(answer) == TEXT
    entry = dev.folder / "src" / "entry.py"
    entry.write_text(entry.read_text().replace("Hello world!", "Hello again!"))
    until(lambda: http("GET", dev.url + "/").body == b"Hello again!", "the reload")
    entry.write_text("class Default(:\n")  # broken: the last good version keeps serving
    until(lambda: "does not compile" in dev.output(), "the compile error to be printed")
    assert http("GET", dev.url + "/").body == b"Hello again!"
    assert (dev.folder / ".dynworkers" / "state").is_dir()  # state lives with the worker


@pytest.mark.parametrize("dev", ["kv"], indirect=True)
def test_dev_binds_the_kv_namespace_its_wrangler_file_names(dev: DevProcess) -> None:
    answer = http("GET", dev.url + "/")
    assert (answer.status, answer.body, ctype(answer)) == (200, b"baz", TEXT)
    assert "env.FOO (KV namespace <YOUR_KV_NAMESPACE_ID>)" in dev.output()


@pytest.mark.parametrize("dev", ["cron"], indirect=True)
def test_dev_runs_scheduled_on_wranglers_test_route_and_prints_its_log(dev: DevProcess) -> None:
    answer = http("GET", dev.url + "/__scheduled?cron=*+*+*+*+*")
    assert (answer.status, answer.body) == (200, b"Ran scheduled event")
    assert ctype(answer).startswith("text/plain")
    until(lambda: "cron processed" in dev.output(), "the tenant's print")
    assert "cron * * * * *" in dev.output()


@pytest.mark.parametrize("dev", ["workflow"], indirect=True)
def test_dev_starts_a_workflow_from_fetch_and_reads_its_status(dev: DevProcess) -> None:
    started = http("GET", dev.url + "/")
    assert started.status == 200 and ctype(started) == "application/json"
    instance = started.json()["id"]
    until(
        lambda: (
            http("GET", f"{dev.url}/?instanceId={instance}").json()["status"]["status"]
            == "complete"
        ),
        "the workflow to complete",
    )
    until(lambda: "executing step2" in dev.output(), "the workflow's prints")


def test_dev_secrets_come_from_dev_vars(tmp_path: Path) -> None:
    folder = tmp_path / "secret"
    shutil.copytree(WORKERS / "hello", folder)
    (folder / ".dev.vars").write_text('GREETING="Hello from .dev.vars"\n')
    entry = folder / "src" / "entry.py"
    entry.write_text(entry.read_text().replace('"Hello world!"', "self.env.GREETING"))
    process = DevProcess(folder)
    try:
        assert http("GET", process.url + "/").body == b"Hello from .dev.vars"
    finally:
        assert process.stop() == 0


def test_dev_refuses_a_directory_that_is_not_a_worker(tmp_path: Path) -> None:
    (tmp_path / "wrangler.jsonc").write_text('{"main": "src/missing.py"}')
    done = subprocess.run(
        [sys.executable, "-m", "dynworkers.runtime.cli", "dev", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 2
    assert "main 'src/missing.py' does not exist" in done.stderr
