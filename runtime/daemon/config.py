"""The daemon's configuration: embedded defaults, a TOML file, `DYNWORKERS_*` variables, flags.

Host side, in the main thread before the event loop starts (and again on SIGHUP). Each layer
overrides the one before it: defaults, then `dynworkers.toml` (or `--config FILE`), then the
environment, then command-line flags. A key no layer knows is an error that names the key and
where it came from, and so is a value of the wrong type: the daemon refuses to start rather than
run on a setting it misread.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynworkers.runtime.errors import DynworkersError

#: read when it exists and no --config is given
DEFAULT_FILE = "dynworkers.toml"
ENV_PREFIX = "DYNWORKERS_"
#: the environment variable naming the config file, the same as --config
CONFIG_VARIABLE = "DYNWORKERS_CONFIG"
#: DYNWORKERS_* variables that are not settings: the CLI's own (the control API's URL)
NOT_SETTINGS = frozenset({CONFIG_VARIABLE, "DYNWORKERS_URL"})


class ConfigError(DynworkersError, ValueError):
    """A configuration key or value the daemon cannot use; the message names it and its source."""


@dataclass(frozen=True)
class DaemonConfig:
    #: address of the tenant front door: /<tenant>/<path> reaches the tenant's fetch
    host: str = "127.0.0.1"
    port: int = 8787
    #: address of the control API (/_/..., /healthz, /metrics); tenants never reach it
    control_host: str = "127.0.0.1"
    control_port: int = 8788
    #: when set, every control request but /healthz needs `Authorization: Bearer <token>`
    control_token: str = ""
    #: the code directory: tenants/<tenant_id>/*.py, main.py being the main module
    tenants: str = "tenants"
    #: a trusted host module ("package.module" or a path to a .py file) with
    #: `load(tenant_id) -> WorkerCode | None`; when set it is the only source of tenant code
    dispatcher: str = ""
    #: where KV, the compile cache, deployed code and the workflow store live
    state_dir: str = ".dynworkers"
    #: the store URL; empty means sqlite:///<state_dir>/engine.db (and KV in <state_dir>/kv.db);
    #: postgresql://user:password@host:port/database puts workflows and KV in that database
    store: str = ""
    #: "full": a workflow commit survives a power loss (SQLite synchronous=FULL); "process": it
    #: survives kill -9 of the daemon, not a power loss (synchronous=NORMAL), and costs less
    durability: str = "full"
    #: also route by Host header: <tenant>.<domain> reaches the tenant with the whole path
    domain: str = ""
    #: behind a proxy: take the scheme and host of the tenant's request URL from the
    #: X-Forwarded-Proto and X-Forwarded-Host headers (turn on only when every request comes
    #: through a proxy that sets them, or a client could choose the URL its tenant sees)
    trust_forwarded: bool = False
    #: request bodies over this many bytes get 413
    max_body_bytes: int = 1 << 20
    #: seconds SIGTERM waits, in all, for requests in flight; one still running then gets 503
    drain_timeout: float = 10.0
    #: seconds a connection may stay open without a request (from its start or last response)
    keepalive_timeout: float = 75.0
    #: seconds a client has to finish a request head once it has begun sending it (else 408)
    header_timeout: float = 10.0
    #: seconds a client has to send a request body (else 408)
    body_timeout: float = 30.0
    #: open connections the front door accepts at once; more are answered 503 and closed
    max_connections: int = 1000
    #: seconds a tenant call may run before its sandbox is killed (504)
    deadline: float = 30.0
    memory_limit_mb: int = 256
    max_sandboxes: int = 64
    spares: int = 2
    idle_ttl: float = 300.0
    #: workflow wake-ups running at once
    max_running: int = 64
    log_level: str = "info"
    #: "text" (one readable line a record) or "json" (one JSON object a line, for a collector)
    log_format: str = "text"
    #: one INFO line per tenant request on the logger dynworkers.access (whatever log_level)
    access_log: bool = False
    #: tenant tracebacks and compile errors in the front door's 500 answers. Off in production:
    #: a traceback shows the tenant's source and data to whoever sent the request; the tenant
    #: reads it in its log stream. On for development (`dynworkers logs` is one step away there)
    expose_errors: bool = False
    #: this daemon's id among the hosts sharing a PostgreSQL store; empty: hostname-pid-random
    host_id: str = ""
    #: seconds a host's claims hold without a renewal (renewed every third of it); another host
    #: takes over the instances of a host whose lease lapsed
    lease: float = 5.0
    #: seconds between two looks for due instances that no live host owns (the safety net
    #: behind LISTEN/NOTIFY)
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("port", "control_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(f"{name} must be a TCP port (0-65535, 0 picks one), got {value}")
        for name in (
            "max_body_bytes",
            "max_sandboxes",
            "max_running",
            "memory_limit_mb",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.spares < 0:
            raise ConfigError(f"spares must be >= 0, got {self.spares}")
        for name in (
            "drain_timeout",
            "deadline",
            "idle_ttl",
            "keepalive_timeout",
            "header_timeout",
            "body_timeout",
            "lease",
            "poll_interval",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.store and not self.store.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError(
                f"store must be sqlite:///path.db or postgresql://user:password@host:port/database,"
                f" got {self.store!r}"
            )
        if self.durability not in ("full", "process"):
            raise ConfigError(f"durability must be full or process, got {self.durability!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"log_level must be debug, info, warning or error, got {self.log_level!r}"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be text or json, got {self.log_format!r}")
        if self.host == self.control_host and self.port == self.control_port and self.port:
            raise ConfigError(
                f"port and control_port are both {self.port}: the control API needs a listener "
                "of its own, so that tenant requests can never reach it"
            )

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{Path(self.state_dir) / 'engine.db'}"


FIELDS = {field.name: field for field in dataclasses.fields(DaemonConfig)}
#: settings SIGHUP applies; a change to any other one is reported and waits for a restart
RELOADABLE = frozenset(
    {
        "tenants",
        "dispatcher",
        "domain",
        "control_token",
        "log_level",
        "drain_timeout",
        "access_log",
        "expose_errors",
    }
)
#: how the environment and flags spell a boolean setting
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
BOOLEANS.update({"0": False, "false": False, "no": False, "off": False})


def _typed(name: str, value: object, source: str, parse: bool = True) -> object:
    """`value` as the type of setting `name`, or ConfigError naming both."""
    if name not in FIELDS:
        known = ", ".join(sorted(FIELDS))
        raise ConfigError(f"unknown setting {name!r} in {source}; known settings: {known}")
    kind = FIELDS[name].type
    if kind == "bool":
        if parse and isinstance(value, str) and value.strip().lower() in BOOLEANS:
            return BOOLEANS[value.strip().lower()]
        if not isinstance(value, bool):
            raise ConfigError(
                f"{name} in {source} must be true or false (1/0, yes/no, on/off in the "
                f"environment), got {value!r}"
            )
        return value
    if parse and isinstance(value, str) and kind != "str":  # from the environment or a flag
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            raise ConfigError(f"{name} in {source} must be a number, got {value!r}") from None
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    expected = {"str": str, "int": int, "float": float, "bool": bool}[str(kind)]
    if isinstance(value, bool) != (kind == "bool") or not isinstance(value, expected):
        raise ConfigError(
            f"{name} in {source} must be {kind}, got {type(value).__name__} {value!r}"
        )
    return value


def _read_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return {name: _typed(name, value, str(path), parse=False) for name, value in data.items()}


def _read_environment(environ: Mapping[str, str]) -> dict[str, object]:
    settings = {}
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in NOT_SETTINGS:
            continue
        name = variable.removeprefix(ENV_PREFIX).lower()
        settings[name] = _typed(name, value, f"the environment ({variable})")
    return settings


def load_config(
    path: str | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> DaemonConfig:
    """Defaults < TOML file < DYNWORKERS_* environment < flags (None means "not given").

    Without `path` (or DYNWORKERS_CONFIG) ./dynworkers.toml is read when it exists."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_VARIABLE)
    settings: dict[str, object] = {}
    if path is not None:
        settings.update(_read_file(Path(path)))
    elif Path(DEFAULT_FILE).is_file():
        settings.update(_read_file(Path(DEFAULT_FILE)))
    settings.update(_read_environment(environ))
    for name, value in (flags or {}).items():
        if value is not None:
            settings[name] = _typed(name, value, "the command line")
    return DaemonConfig(**settings)  # type: ignore[arg-type]
