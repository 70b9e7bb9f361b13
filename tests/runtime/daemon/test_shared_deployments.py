"""Deployments shared through one PostgreSQL: a deploy through any host is served by every host;
a broken one is refused and changes nothing anywhere; a code directory changed on one host and
reloaded (SIGHUP) deploys for all, its removal removes for all; a host restarted with an older
directory does not roll back what another host deployed.

Real daemon processes on a real PostgreSQL (tests/postgres.py). Answers from another host are
polled until they match, with a deadline that only guards against a hang; no duration is asserted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.runtime.daemon.support import DaemonProcess, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(150)

#: seconds a poll waits for another host to catch up: a hang guard, not a figure
CATCH_UP_S = 30.0


def eventually(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        last = check()
        if last is True:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {last!r}")
        time.sleep(0.1)


def serves(host: DaemonProcess, tenant: str, body: bytes) -> Callable[[], object]:
    def check() -> object:
        answer = host.get(f"/{tenant}/")
        if answer.status == 200 and answer.body == body:
            return True
        return answer.status, answer.body

    return check


@pytest.fixture
def hosts(tmp_path: Path, postgres_url: str) -> Iterator[list[DaemonProcess]]:
    started = []
    try:
        for name in ("a", "b"):
            root = tmp_path / name
            root.mkdir()
            started.append(DaemonProcess(root, root / "tenants", store=postgres_url).start())
        yield started
    finally:
        for host in started:
            host.stop()


def test_a_deploy_through_one_host_is_served_by_every_host(hosts: list[DaemonProcess]) -> None:
    first, second = hosts
    put = first.api("PUT", "/_/tenants/pushed", {"modules": {"main": programs.VERSION_ONE}})
    assert put.status == 201, put
    eventually(serves(second, "pushed", b"version one"), "host b serving version one")
    assert first.get("/pushed/").body == b"version one"

    again = second.api("PUT", "/_/tenants/pushed", {"modules": {"main": programs.VERSION_TWO}})
    assert again.status == 201, again
    eventually(serves(first, "pushed", b"version two"), "host a serving version two")
    assert second.get("/pushed/").body == b"version two"

    history = first.api("GET", "/_/tenants/pushed").json()
    versions = [entry["version"] for entry in history["deployments"]]
    assert versions == [put.json()["version"], again.json()["version"]]
    assert second.api("GET", "/_/tenants/pushed").json()["deployments"] == history["deployments"]


def test_a_broken_deploy_is_refused_and_changes_nothing_anywhere(
    hosts: list[DaemonProcess],
) -> None:
    first, second = hosts
    put = first.api("PUT", "/_/tenants/pushed", {"modules": {"main": programs.VERSION_ONE}})
    assert put.status == 201, put
    eventually(serves(second, "pushed", b"version one"), "host b serving version one")
    before = second.api("GET", "/_/tenants/pushed").json()

    refused = first.api("PUT", "/_/tenants/pushed", {"modules": {"main": programs.BROKEN}})
    assert refused.status == 422, refused
    # a later deploy through the other host is served: the broken one never got in between
    marker = second.api("PUT", "/_/tenants/marker", {"modules": {"main": programs.VERSION_TWO}})
    assert marker.status == 201
    eventually(serves(first, "marker", b"version two"), "host a serving the marker tenant")
    for host in hosts:
        assert host.get("/pushed/").body == b"version one"
        assert host.api("GET", "/_/tenants/pushed").json() == before


def test_a_code_directory_reloaded_on_one_host_deploys_and_removes_for_all(
    hosts: list[DaemonProcess],
) -> None:
    first, second = hosts
    write_tenant(first.tenants, "fromdir", main=programs.VERSION_ONE)
    first.send(signal.SIGHUP)
    eventually(serves(second, "fromdir", b"version one"), "host b serving the directory's code")

    write_tenant(first.tenants, "fromdir", main=programs.VERSION_TWO)
    first.send(signal.SIGHUP)
    eventually(serves(second, "fromdir", b"version two"), "host b serving the edited code")

    # host b's own (empty) directory removes nothing when it reloads
    second.send(signal.SIGHUP)
    pushed = second.api("PUT", "/_/tenants/marker", {"modules": {"main": programs.VERSION_ONE}})
    assert pushed.status == 201
    eventually(serves(first, "marker", b"version one"), "host a serving the marker tenant")
    assert second.get("/fromdir/").body == b"version two"

    for file in (first.tenants / "fromdir").iterdir():
        file.unlink()
    (first.tenants / "fromdir").rmdir()
    first.send(signal.SIGHUP)
    eventually(lambda: second.get("/fromdir/").status == 404, "host b dropping the tenant")


def test_a_new_host_with_an_older_directory_does_not_roll_back(
    tmp_path: Path, postgres_url: str
) -> None:
    first = DaemonProcess(tmp_path / "a", store=postgres_url)
    late = DaemonProcess(tmp_path / "c", store=postgres_url)
    for host in (first, late):
        host.root.mkdir()
        write_tenant(host.tenants, "shared", main=programs.VERSION_ONE)
    try:
        first.start()
        assert first.get("/shared/").body == b"version one"
        put = first.api("PUT", "/_/tenants/shared", {"modules": {"main": programs.VERSION_TWO}})
        assert put.status == 201
        late.start()  # its directory still holds version one
        assert late.get("/shared/").body == b"version two"
        assert first.get("/shared/").body == b"version two"
        late.send(signal.SIGHUP)  # unchanged since it last read it: nothing to deploy
        marker = late.api("PUT", "/_/tenants/marker", {"modules": {"main": programs.VERSION_ONE}})
        assert marker.status == 201
        eventually(serves(first, "marker", b"version one"), "host a serving the marker tenant")
        assert first.get("/shared/").body == b"version two"
    finally:
        first.stop()
        late.stop()


def test_a_deleted_tenant_stays_deleted_when_its_unchanged_directory_is_reloaded(
    hosts: list[DaemonProcess],
) -> None:
    """As on one host: `tenants delete` of a directory tenant holds until its directory changes."""
    first, second = hosts
    write_tenant(first.tenants, "fromdir", main=programs.VERSION_ONE)
    first.send(signal.SIGHUP)
    eventually(serves(second, "fromdir", b"version one"), "host b serving the directory's code")

    deleted = first.api("DELETE", "/_/tenants/fromdir")  # the host whose directory holds it
    assert deleted.status == 200, deleted
    eventually(lambda: second.get("/fromdir/").status == 404, "host b dropping the tenant")
    mark = first.log().count("reloaded:")
    first.send(signal.SIGHUP)
    eventually(lambda: first.log().count("reloaded:") > mark, "host a reloading")
    assert first.get("/fromdir/").status == 404
    assert second.get("/fromdir/").status == 404

    write_tenant(first.tenants, "fromdir", main=programs.VERSION_TWO)  # a changed directory
    first.send(signal.SIGHUP)
    eventually(serves(second, "fromdir", b"version two"), "host b serving the edited code")
