"""Deployments: which version of each tenant's code the daemon serves, kept on disk.

Host side, on the daemon's event loop (file I/O is small and rare: a deploy or a reload). Code
comes from two places: the code directory (`<tenants>/<tenant_id>/*.py`, or the modules a
wrangler file's `main` names, with that file's config as the `__wrangler__` module; read at
start and on SIGHUP) and the control API (`PUT /_/tenants/<id>`). Every version is stored under
`<state_dir>/code/<tenant>/<version>/` and named by its content hash, and each tenant's history is
`<state_dir>/code/<tenant>/deployments.json`; the last entry is what is served. A restart serves
what was served before it.

The directory wins when it changes: a tenant directory whose content differs from the last
version read from it becomes the current version again (so editing a file and sending SIGHUP
deploys it), while an unchanged directory leaves a version deployed through the API in place.

Fails with `InvalidTenant` (a bad tenant id or module set); compiling is the caller's job: a
version is only activated after it compiled, so a broken deploy never replaces a working one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynworkers.runtime.daemon.wrangler import (
    WranglerError,
    config_of,
    read_worker_directory,
)
from dynworkers.runtime.errors import DynworkersError

log = logging.getLogger("dynworkers.deployments")

#: tenant ids are DNS labels, so that <tenant>.<domain> routing works for every tenant
TENANT_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_MODULES = 64


class InvalidTenant(DynworkersError, ValueError):
    """A tenant id or a set of modules that cannot be deployed; the message says why."""


def check_tenant_id(tenant: object) -> str:
    if not isinstance(tenant, str) or not TENANT_ID.match(tenant):
        raise InvalidTenant(
            f"tenant id {tenant!r} is not valid: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return tenant


@dataclass(frozen=True)
class Version:
    tenant: str
    version: str
    main_module: str
    modules: dict[str, str]
    #: "directory" or "api"
    source: str
    deployed_at: float

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "main_module": self.main_module,
            "modules": sorted(self.modules),
            "source": self.source,
            "deployed_at": self.deployed_at,
        }


def version_of(main_module: str, modules: dict[str, str]) -> str:
    digest = hashlib.sha256(main_module.encode())
    for name in sorted(modules):
        digest.update(b"\0" + name.encode() + b"\0" + modules[name].encode())
    return digest.hexdigest()[:16]


def pick_main(tenant: str, modules: dict[str, str], main_module: str | None = None) -> str:
    """The main module: the one named, else `main`, else the only module."""
    if not modules:
        raise InvalidTenant(f"tenant {tenant!r} has no modules: add a main.py")
    if len(modules) > MAX_MODULES:
        raise InvalidTenant(f"tenant {tenant!r} has {len(modules)} modules; at most {MAX_MODULES}")
    if main_module is None:
        try:
            wrangler = config_of(modules)
        except WranglerError as exc:
            raise InvalidTenant(f"tenant {tenant!r}: {exc}") from None
        if wrangler is not None and wrangler.main_module:
            main_module = wrangler.main_module
    if main_module is not None:
        if main_module not in modules:
            raise InvalidTenant(
                f"main_module {main_module!r} of tenant {tenant!r} is not among its modules "
                f"{sorted(modules)}"
            )
        return main_module
    if "main" in modules:
        return "main"
    if len(modules) == 1:
        return next(iter(modules))
    raise InvalidTenant(
        f"tenant {tenant!r} has {len(modules)} modules and none is named main: add main.py "
        "or name the main module"
    )


def read_directory(path: Path, dev: bool = False) -> dict[str, str]:
    """The modules of one tenant directory: each `<name>.py` file, by name; with a wrangler
    file, the modules beside its `main` and its config (runtime.daemon.wrangler)."""
    try:
        return read_worker_directory(path, dev)
    except WranglerError as exc:
        raise InvalidTenant(f"tenant directory {path.name!r}: {exc}") from None


class Deployments:
    def __init__(self, state_dir: Path, directory: Path | None) -> None:
        self.root = state_dir / "code"
        self.directory = directory
        self.current: dict[str, Version] = {}
        #: per tenant, the version last read from the code directory
        self._from_directory: dict[str, str] = {}
        #: no history on disk at load: this state directory never served anything
        self.fresh = True
        #: read `.dev.vars` beside a wrangler file (`dynworkers dev` only)
        self.dev = False
        #: what the last `scan` could not read: folder names (or the directory itself), and why
        self.refused: dict[str, str] = {}

    # --- reading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """What was served before a restart."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.root.iterdir()):
            history = self._history(folder.name)
            if not history:
                continue
            self.fresh = False
            self._from_directory[folder.name] = history[-1].get("directory", "")
            latest = history[-1]
            if latest.get("removed"):
                continue
            version = self._read_version(folder.name, latest)
            if version is not None:
                self.current[folder.name] = version

    def _history(self, tenant: str) -> list[dict[str, Any]]:
        try:
            entries = json.loads((self.root / tenant / "deployments.json").read_text())
        except (FileNotFoundError, ValueError):
            return []
        return entries if isinstance(entries, list) else []

    def _read_version(self, tenant: str, entry: dict[str, Any]) -> Version | None:
        folder = self.root / tenant / str(entry.get("version"))
        try:
            modules = read_directory(folder)
        except FileNotFoundError:
            log.error("tenant %r: stored version %s is missing; not served", tenant, folder)
            return None
        return Version(
            tenant,
            str(entry["version"]),
            str(entry["main_module"]),
            modules,
            str(entry["source"]),
            float(entry["deployed_at"]),
        )

    def history(self, tenant: str) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in entry.items() if k != "directory"} for entry in self._history(tenant)
        ]

    # --- the code directory ----------------------------------------------------------------------

    def scan(self) -> tuple[list[Version], list[str]]:
        """Versions the code directory wants deployed (changed since last read), and tenants
        whose directory is gone while their served version came from it."""
        self.refused = {}
        if self.directory is None:
            return [], []
        if not self.directory.is_dir():
            log.warning(
                "code directory %s does not exist; serving deployed code only", self.directory
            )
            self.refused[str(self.directory)] = "the code directory does not exist"
            return [], []
        changed, present = [], set()
        for folder in sorted(self.directory.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            try:
                tenant = check_tenant_id(folder.name)
                modules = read_directory(folder, self.dev)
                version = self.prepare(tenant, modules, None, "directory")
            except InvalidTenant as exc:
                log.error("code directory: %s", exc)
                self.refused[folder.name] = str(exc)
                continue
            except OSError as exc:
                log.error("code directory: cannot read %s: %s", folder, exc)
                self.refused[folder.name] = f"cannot be read: {exc}"
                continue
            present.add(tenant)
            if self._from_directory.get(tenant) != version.version:
                changed.append(version)
        gone = [
            tenant
            for tenant, version in self.current.items()
            # read from this code directory before (several hosts: not another host's tenant)
            if version.source == "directory"
            and self._from_directory.get(tenant)
            and tenant not in present
        ]
        return changed, gone

    # --- deploying -------------------------------------------------------------------------------

    def prepare(
        self, tenant: str, modules: dict[str, str], main_module: str | None, source: str
    ) -> Version:
        check_tenant_id(tenant)
        main = pick_main(tenant, modules, main_module)
        return Version(tenant, version_of(main, modules), main, modules, source, time.time())

    def activate(self, version: Version, replicated: bool = False) -> bool:
        """Store the version (compiled by the caller) and serve it; False if already served.

        `replicated`: deployed by another host (runtime.daemon.shared_deployments), so it says
        nothing about what this host's code directory holds."""
        tenant = version.tenant
        if version.source == "directory" and not replicated:
            self._from_directory[tenant] = version.version
        served = self.current.get(tenant)
        if served is not None and served.version == version.version:
            self._append(tenant, version, note_only=True)
            return False
        folder = self.root / tenant / version.version
        if not folder.is_dir():
            staging = self.root / tenant / f".{version.version}.{os.getpid()}"
            staging.mkdir(parents=True, exist_ok=True)
            for name, source in version.modules.items():
                (staging / f"{name}.py").write_text(source, encoding="utf-8")
            staging.rename(folder)
        self._append(tenant, version)
        self.current[tenant] = version
        return True

    def remove(self, tenant: str, replicated: bool = False) -> None:
        """Stop serving a tenant (its directory is gone); its versions stay on disk.

        `replicated`: removed by another host; this host's directory marker stays."""
        if self.current.pop(tenant, None) is None:
            return
        if not replicated:
            self._from_directory[tenant] = ""
        history = self._history(tenant)
        directory = self._from_directory.get(tenant, "")
        history.append({"removed": True, "deployed_at": time.time(), "directory": directory})
        self._write_history(tenant, history)

    def note_directory(self, tenant: str, version: str) -> None:
        """Remember `version` as read from the code directory without deploying it."""
        self._from_directory[tenant] = version
        self._append(tenant, self.current[tenant], note_only=True)

    def _append(self, tenant: str, version: Version, note_only: bool = False) -> None:
        history = self._history(tenant)
        entry = {**version.describe(), "directory": self._from_directory.get(tenant, "")}
        if note_only:
            if history:  # the directory caught up with what is served: remember it
                history[-1]["directory"] = entry["directory"]
        else:
            history.append(entry)
        self._write_history(tenant, history)

    def _write_history(self, tenant: str, history: list[dict[str, Any]]) -> None:
        path = self.root / tenant / "deployments.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(history, indent=1))
        partial.replace(path)  # atomic: a crash leaves the old history or the new one
