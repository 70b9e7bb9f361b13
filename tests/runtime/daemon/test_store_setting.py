"""The daemon's `store` setting: TOML, DYNWORKERS_STORE and --store; a wrong or unreachable store
stops `dynworkers serve` at start with one line and exit 2; two daemons on one PostgreSQL serve a
tenant's KV and its workflow instances from the same database.

Real daemon processes, a real PostgreSQL (tests/postgres.py); no test asserts a duration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dynworkers.runtime.daemon.config import ConfigError, load_config
from tests.postgres import free_port
from tests.runtime.daemon.support import EXAMPLES, SOURCE_ROOT, DaemonProcess, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(120)


def test_store_comes_from_the_file_the_environment_or_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "dynworkers.toml"
    path.write_text('store = "postgresql://file@db/one"\n')
    assert load_config(str(path), environ={}).store == "postgresql://file@db/one"
    environ = {"DYNWORKERS_STORE": "postgres://env@db/two"}
    assert load_config(str(path), environ=environ).store == "postgres://env@db/two"
    flags = {"store": "sqlite:///x.db"}
    assert load_config(str(path), flags, environ).store == "sqlite:///x.db"


def test_a_store_url_of_an_unknown_kind_is_a_config_error_saying_what_to_use() -> None:
    with pytest.raises(ConfigError, match="postgresql://"):
        load_config(environ={"DYNWORKERS_STORE": "mysql://db/x"})


def serve(tmp_path: Path, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DYNWORKERS_")}
    environ.update(environment, PYTHONPATH=str(SOURCE_ROOT))
    (tmp_path / "tenants").mkdir(exist_ok=True)
    command = [
        sys.executable, "-m", "dynworkers.runtime.cli", "serve",
        "--tenants", str(tmp_path / "tenants"), "--state-dir", str(tmp_path / "state"),
        "--port", "0", "--control-port", "0", *arguments,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
    )


def assert_one_line_and_exit_2(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("dynworkers: ")]
    assert len(errors) == 1, done.stderr
    for text in expected:
        assert text in errors[0], errors[0]


def test_an_unreachable_postgres_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"postgresql://dw:secret@127.0.0.1:{free_port()}/nothing"  # nothing listens there
    done = serve(tmp_path, "--store", url)
    assert_one_line_and_exit_2(done, "cannot connect to PostgreSQL", "server is running")
    assert "secret" not in done.stderr
    done = serve(tmp_path, DYNWORKERS_STORE=url)
    assert_one_line_and_exit_2(done, "cannot connect to PostgreSQL")


def test_a_malformed_store_url_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = serve(tmp_path, "--store", "postgresql://dw@127.0.0.1:notaport/db")
    assert_one_line_and_exit_2(done, "check the URL")
    done = serve(tmp_path, "--store", "redis://127.0.0.1/0")
    assert_one_line_and_exit_2(done, "store must be")


def test_two_daemons_on_one_postgres_share_kv_and_workflow_instances(
    tmp_path: Path, postgres_url: str
) -> None:
    tenants = tmp_path / "tenants"
    shutil.copytree(EXAMPLES / "counter", tenants / "counter")
    write_tenant(tenants, "napper", main=programs.NAPPER)
    first = DaemonProcess(tmp_path / "a", tenants, store=postgres_url)
    second = DaemonProcess(tmp_path / "b", tenants, store=postgres_url)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        first.start()
        second.start()
        assert first.get("/counter/").json()["hits"] == 1
        assert second.get("/counter/").json()["hits"] == 2  # the same KV row
        assert first.get("/counter/").json()["hits"] == 3
        base = "/_/tenants/napper/workflows"
        created = first.api("POST", base, {"id": "pg-1", "params": {"n": 1, "wait": True}})
        assert created.status == 201, created
        first.wait_for("napper", "pg-1", "waiting")
        listed = second.api("GET", base).json()["instances"]  # the other host sees it
        assert "pg-1" in {i["id"] for i in listed}
        assert not (first.state_dir / "kv.db").exists()
        assert not (first.state_dir / "engine.db").exists()
    finally:
        assert first.stop() == 0
        assert second.stop() == 0
