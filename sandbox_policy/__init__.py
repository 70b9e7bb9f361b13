"""sandbox_policy: what tenant code may do.

The language layer (RestrictedPython transformer, guards, safe builtins, vetted module proxies)
and the OS layer (rlimits, seccomp, Landlock, privilege drop) as data and the code that applies it.
Imports nothing from `runtime`, `loader` or `engine`.

`compile_module` is imported lazily (PEP 562): it pulls in RestrictedPython, which the host needs
and the zygote and its sandboxes must not carry.
"""

from __future__ import annotations

from typing import Any

from dynworkers.sandbox_policy.errors import PolicyError, SourceRejected
from dynworkers.sandbox_policy.hardening import HardeningReport, PreparedHardening
from dynworkers.sandbox_policy.namespace import TenantNamespace, register_safe_type
from dynworkers.sandbox_policy.policy import KNOWN_MODULES, OsLimits, Policy

__all__ = [
    # policy as data
    "KNOWN_MODULES",
    "OsLimits",
    "Policy",
    # language layer: host side (compile) and sandbox side (namespace)
    "TenantNamespace",
    "compile_module",
    "register_safe_type",
    # OS layer
    "HardeningReport",
    "PreparedHardening",
    # errors
    "PolicyError",
    "SourceRejected",
]


def __getattr__(name: str) -> Any:
    if name == "compile_module":
        from dynworkers.sandbox_policy.compiler import compile_module

        return compile_module
    raise AttributeError(f"module 'sandbox_policy' has no attribute {name!r}")
