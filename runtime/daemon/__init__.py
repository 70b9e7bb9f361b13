"""runtime.daemon: `dynworkers serve`, an HTTP front door and a control API around a Supervisor
and an Engine, with its config, deployments, Prometheus metrics and per-tenant logs.

Host side only. Imported by the CLI and by hosts that want the daemon in their own process.
"""

from __future__ import annotations

from dynworkers.runtime.daemon.client import (
    AsyncControlClient,
    ControlClient,
    ControlError,
    ControlInvalid,
    ControlNotFound,
    ControlUnauthorized,
    ControlUnavailable,
)
from dynworkers.runtime.daemon.config import ConfigError, DaemonConfig, load_config
from dynworkers.runtime.daemon.deployments import InvalidTenant
from dynworkers.runtime.daemon.server import Daemon
from dynworkers.runtime.daemon.tenants import DeployRefused, HostBindings, UnknownTenant

__all__ = [
    # running
    "Daemon",
    "DaemonConfig",
    "load_config",
    # what a dispatcher module receives
    "HostBindings",
    # the control API's client (the CLI's)
    "ControlClient",
    "AsyncControlClient",
    # errors
    "ConfigError",
    "InvalidTenant",
    "UnknownTenant",
    "DeployRefused",
    "ControlError",
    "ControlInvalid",
    "ControlNotFound",
    "ControlUnavailable",
    "ControlUnauthorized",
]
