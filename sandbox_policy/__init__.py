"""sandbox_policy: what tenant code may do.

The language layer (RestrictedPython transformer, guards, safe builtins, vetted module proxies)
and the OS layer (rlimits, seccomp, Landlock, privilege drop) as data and the code that applies it.
Imports nothing from `runtime`, `loader` or `engine`.
"""

from sandbox_policy.errors import PolicyError, SourceRejected
from sandbox_policy.policy import KNOWN_MODULES, OsLimits, Policy

__all__ = [
    # policy as data
    "KNOWN_MODULES",
    "OsLimits",
    "Policy",
    # errors
    "PolicyError",
    "SourceRejected",
]
