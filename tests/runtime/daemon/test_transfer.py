"""`dynworkers export` and `dynworkers import`: a real single-host SQLite state (instances in
several statuses, steps, a buffered event, KV, two tenants' deployments) moved into a real
PostgreSQL, then served by a daemon on it; the refusals (a running daemon, existing rows, a
dump cut short or not a dump, a non-PostgreSQL target) are one line and exit 2.

Real daemons and CLI processes, a real PostgreSQL (tests/postgres.py); no duration asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.daemon.support import EXAMPLES, SOURCE_ROOT, DaemonProcess, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(180)

HOUR = {"n": 3, "nap": "1 hour"}


def cli(*arguments: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DYNWORKERS_")}
    environ["PYTHONPATH"] = str(SOURCE_ROOT)
    command = [sys.executable, "-m", "dynworkers.runtime.cli", *arguments]
    return subprocess.run(command, env=environ, input=stdin, capture_output=True, timeout=60)


def one_line_exit_2(done: subprocess.CompletedProcess[bytes], *expected: str) -> str:
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("dynworkers: ")]
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def build_sqlite_state(root: Path) -> tuple[DaemonProcess, dict[str, str]]:
    """A daemon on SQLite, left running, with everything export must carry."""
    tenants = root / "tenants"
    write_tenant(tenants, "napper", main=programs.NAPPER)
    daemon = DaemonProcess(root, tenants).start()
    shutil.copytree(EXAMPLES / "counter", root / "counter-src")
    counter = (root / "counter-src" / "main.py").read_text()
    assert daemon.api("PUT", "/_/tenants/counter", {"modules": {"main": counter}}).status == 201
    for _ in range(3):
        assert daemon.get("/counter/").status == 200
    for source in (programs.VERSION_ONE, programs.VERSION_TWO):
        put = daemon.api("PUT", "/_/tenants/pushed", {"modules": {"main": source}})
        assert put.status == 201, put
    base = "/_/tenants/napper/workflows"
    created = {
        "done": {"n": 1},
        "waits": {"n": 2, "wait": True},
        "sleeps": HOUR,
        "stopped": HOUR,
        "held": HOUR,
    }
    for instance, params in created.items():
        assert daemon.api("POST", base, {"id": instance, "params": params}).status == 201
    daemon.wait_for("napper", "done", "complete")
    daemon.wait_for("napper", "waits", "waiting")
    daemon.wait_for("napper", "sleeps", "waiting")
    daemon.wait_for("napper", "held", "waiting")
    assert daemon.api("POST", f"{base}/stopped/terminate").status == 200
    assert daemon.api("POST", f"{base}/held/pause").status == 200
    # an event of a type nobody waits for stays buffered
    sent = daemon.api("POST", f"{base}/waits/events", {"type": "later", "payload": {"x": 1}})
    assert sent.status in (200, 202), sent
    statuses = {
        instance: daemon.api("GET", f"{base}/{instance}").json()["status"] for instance in created
    }
    assert statuses == {
        "done": "complete",
        "waits": "waiting",
        "sleeps": "waiting",
        "stopped": "terminated",
        "held": "paused",
    }
    return daemon, statuses


def test_a_sqlite_state_moves_to_postgres_and_a_daemon_there_serves_it(
    tmp_path: Path, postgres_url: str
) -> None:
    single = tmp_path / "single"
    single.mkdir()
    daemon, statuses = build_sqlite_state(single)
    dump = tmp_path / "state.dump"
    try:
        refused = cli("export", "--state-dir", str(daemon.state_dir), "--out", str(dump))
        one_line_exit_2(refused, f"in use by process {daemon.pid}", "stop it")
        assert not dump.exists()
    finally:
        assert daemon.stop() == 0

    exported = cli("export", "--state-dir", str(daemon.state_dir), "--out", str(dump))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in dump.read_bytes().splitlines()]
    assert lines[0]["kind"] == "header" and lines[0]["version"] == 1
    kinds = [line["kind"] for line in lines]
    assert kinds[-1] == "end"
    assert kinds.count("instance") == 5 and kinds.count("event") == 1
    assert kinds.count("step") >= 5 and kinds.count("kv") == 1
    assert {line["tenant"] for line in lines if line["kind"] == "code"} == {
        "napper",
        "counter",
        "pushed",
    }

    to_stdout = cli("export", "--state-dir", str(daemon.state_dir))
    assert to_stdout.returncode == 0 and b"exported 5 instance" in to_stdout.stderr
    assert len(to_stdout.stdout.splitlines()) == len(lines)

    imported = cli("import", "--store", postgres_url, "--in", str(dump))
    assert imported.returncode == 0, imported.stderr
    again = cli("import", "--store", postgres_url, stdin=dump.read_bytes())
    one_line_exit_2(again, "5 instance(s)", "--replace")
    replaced = cli("import", "--store", postgres_url, "--in", str(dump), "--replace")
    assert replaced.returncode == 0, replaced.stderr

    cluster = tmp_path / "cluster"
    cluster.mkdir()
    host = DaemonProcess(cluster, store=postgres_url).start()  # an empty code directory
    try:
        assert host.get("/counter/").json()["hits"] == 4  # the KV came along
        assert host.get("/pushed/").body == b"version two"
        history = host.api("GET", "/_/tenants/pushed").json()["deployments"]
        assert len(history) == 2
        base = "/_/tenants/napper/workflows"
        for instance, status in statuses.items():
            assert host.api("GET", f"{base}/{instance}").json()["status"] == status
        done = host.api("GET", f"{base}/done").json()
        assert done["output"] == {"first": 2}
        sent = host.api("POST", f"{base}/waits/events", {"type": "go", "payload": "yes"})
        assert sent.status in (200, 202), sent
        finished = host.wait_for("napper", "waits", "complete")
        assert finished["output"] == {"first": 3, "go": "yes"}
    finally:
        assert host.stop() == 0


def test_a_dump_cut_short_or_not_a_dump_is_refused_before_anything_is_written(
    tmp_path: Path, postgres_url: str
) -> None:
    header = b'{"kind":"header","format":"dynworkers-export","version":1,"created":1.0}\n'
    instance = (
        b'{"kind":"instance","id":"x","workflow":"tenants","status":"queued",'
        b'"params":"gA==","created":1.0,"updated":1.0}\n'
    )
    cut = cli("import", "--store", postgres_url, stdin=header + instance)
    one_line_exit_2(cut, "no end line", "export it again")
    lying = header + instance + b'{"kind":"end","counts":{"instance":2}}\n'
    one_line_exit_2(cli("import", "--store", postgres_url, stdin=lying), "counts 2 instance")
    newer = header.replace(b'"version":1', b'"version":9') + b'{"kind":"end","counts":{}}\n'
    one_line_exit_2(cli("import", "--store", postgres_url, stdin=newer), "version 9")
    one_line_exit_2(cli("import", "--store", postgres_url, stdin=b"\x80pickle"), "line 1")
    sqlite = cli("import", "--store", f"sqlite:///{tmp_path}/x.db", stdin=header)
    one_line_exit_2(sqlite, "needs a PostgreSQL store")
    # nothing was written: the same instance imports cleanly now
    whole = header + instance + b'{"kind":"end","counts":{"instance":1}}\n'
    assert cli("import", "--store", postgres_url, stdin=whole).returncode == 0


def test_export_of_a_directory_without_state_says_so(tmp_path: Path) -> None:
    one_line_exit_2(cli("export", "--state-dir", str(tmp_path / "none")), "does not exist")
    one_line_exit_2(cli("export", "--state-dir", str(tmp_path)), "holds no SQLite state")
