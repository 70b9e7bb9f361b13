"""Deployments on disk: versions by content hash, the directory's precedence, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynworkers.runtime.daemon.deployments import (
    Deployments,
    InvalidTenant,
    check_tenant_id,
    pick_main,
)


def tenant_dir(root: Path, tenant: str, **modules: str) -> Path:
    folder = root / tenant
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.py"):
        stale.unlink()
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    return folder


def scan_and_activate(deployments: Deployments) -> list[str]:
    changed, gone = deployments.scan()
    for version in changed:
        deployments.activate(version)
    for tenant in gone:
        deployments.remove(tenant)
    return [v.tenant for v in changed]


def test_the_version_is_the_content_hash_and_survives_a_restart(tmp_path: Path) -> None:
    code = tmp_path / "tenants"
    tenant_dir(code, "acme", main="x = 1\n", util="y = 2\n")
    first = Deployments(tmp_path / "state", code)
    first.load()
    assert scan_and_activate(first) == ["acme"]
    version = first.current["acme"].version
    again = Deployments(tmp_path / "state", code)
    again.load()
    assert again.current["acme"].version == version
    assert again.current["acme"].modules == {"main": "x = 1\n", "util": "y = 2\n"}
    assert scan_and_activate(again) == []  # unchanged: nothing to deploy


def test_an_api_deploy_stays_until_the_directory_changes(tmp_path: Path) -> None:
    code = tmp_path / "tenants"
    tenant_dir(code, "acme", main="x = 1\n")
    deployments = Deployments(tmp_path / "state", code)
    deployments.load()
    scan_and_activate(deployments)
    pushed = deployments.prepare("acme", {"main": "x = 2\n"}, None, "api")
    assert deployments.activate(pushed)
    assert scan_and_activate(deployments) == []
    assert deployments.current["acme"].source == "api"
    tenant_dir(code, "acme", main="x = 3\n")
    assert scan_and_activate(deployments) == ["acme"]
    assert deployments.current["acme"].modules == {"main": "x = 3\n"}
    sources = [entry["source"] for entry in deployments.history("acme")]
    assert sources == ["directory", "api", "directory"]


def test_a_removed_directory_stops_serving_its_tenant_only(tmp_path: Path) -> None:
    code = tmp_path / "tenants"
    tenant_dir(code, "gone", main="x = 1\n")
    deployments = Deployments(tmp_path / "state", code)
    deployments.load()
    scan_and_activate(deployments)
    deployments.activate(deployments.prepare("pushed", {"main": "y = 1\n"}, None, "api"))
    for file in (code / "gone").iterdir():
        file.unlink()
    (code / "gone").rmdir()
    scan_and_activate(deployments)
    assert sorted(deployments.current) == ["pushed"]
    restarted = Deployments(tmp_path / "state", code)
    restarted.load()
    assert sorted(restarted.current) == ["pushed"]


def test_bad_tenant_ids_and_module_sets_are_refused() -> None:
    for bad in ("", "Acme", "_", "a_b", "-a", "a" * 64, "../x"):
        with pytest.raises(InvalidTenant, match="not valid"):
            check_tenant_id(bad)
    with pytest.raises(InvalidTenant, match="no modules"):
        pick_main("acme", {})
    with pytest.raises(InvalidTenant, match="none is named main"):
        pick_main("acme", {"a": "", "b": ""})
    assert pick_main("acme", {"only": ""}) == "only"
    with pytest.raises(InvalidTenant, match="not among its modules"):
        pick_main("acme", {"main": ""}, "other")
