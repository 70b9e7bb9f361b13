"""What tenant code may do, as frozen data.

Runs in every process: the host reads a `Policy` to compile tenant code and to key the compile
cache; the zygote reads its `OsLimits` to prepare the hardening that each sandbox installs.
Nothing here touches the process it runs in.

A `Policy` fails only at construction: `__post_init__` raises `PolicyError` when an invariant does
not hold (a negative limit, a module name that has no vetted proxy), so a bad policy never reaches
a sandbox.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from dynworkers.sandbox_policy.errors import PolicyError

#: Modules a tenant may import when a policy allows them. Each one is offered as a vetted proxy
#: (see `sandbox_policy.proxies`), never as the raw module: the raw `json`, `re` and `datetime`
#: re-export `sys` and `codecs`. The reason each is safe lives beside its proxy.
KNOWN_MODULES: frozenset[str] = frozenset(
    {
        "json",
        "math",
        "re",
        "datetime",
        "time",
        "random",
        "hashlib",
        "base64",
        "collections",
        "itertools",
        "functools",
        "string",
        "uuid",
        "urllib.parse",
        "typing",
        "dataclasses",
    }
)

#: The default preset's modules: what code written for Cloudflare's Python Workers reaches for.
DEFAULT_MODULES: frozenset[str] = KNOWN_MODULES

MiB = 1024 * 1024


@dataclass(frozen=True)
class OsLimits:
    """Limits the kernel enforces inside each sandbox, applied before it serves a tenant."""

    #: RLIMIT_AS in bytes: address space, so a memory bomb ends in MemoryError, not the host OOM.
    memory_bytes: int = 512 * MiB
    #: RLIMIT_CPU in seconds over the sandbox's life: a backstop under the host's deadlines.
    cpu_seconds: int = 300
    #: RLIMIT_NOFILE: the sandbox needs a handful for its ZeroMQ channel and nothing else.
    open_files: int = 64
    #: RLIMIT_FSIZE in bytes: tenant code has no reason to write files.
    file_size: int = 0
    #: RLIMIT_NPROC once confined: no new processes or threads (only where the uid is unprivileged).
    processes: int = 0
    #: seccomp filter that kills on non-AF_UNIX sockets, execve and process creation.
    seccomp: bool = True
    #: Landlock ruleset that makes the whole filesystem read-only, where the kernel has it.
    landlock: bool = True
    #: When the host runs as root, sandboxes drop to this unprivileged uid and gid.
    drop_privileges: bool = True
    uid: int = 65534
    gid: int = 65534

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "cpu_seconds", "open_files", "file_size", "processes"):
            if getattr(self, name) < 0:
                raise PolicyError(f"OsLimits.{name} must be >= 0, got {getattr(self, name)}")
        if self.memory_bytes and self.memory_bytes < 64 * MiB:
            raise PolicyError(
                f"OsLimits.memory_bytes={self.memory_bytes} is below 64 MiB: a Python sandbox "
                "cannot start in less; raise it or set 0 for no limit"
            )
        if self.open_files and self.open_files < 16:
            raise PolicyError("OsLimits.open_files must be >= 16: the ZeroMQ channel needs them")


@dataclass(frozen=True)
class Policy:
    """The whole contract between the host and tenant code.

    Build one from a preset (`Policy.default()`, `Policy.strict()`, `Policy.trusted()`) and adjust
    it with the `with_*` methods, which return copies. `version` is a hash of every field; it is
    part of the compile-cache key, so changing a policy recompiles what it governs.
    """

    #: False only for `trusted()`: code is compiled as plain Python with full builtins. The OS
    #: layer still applies; use it for code you wrote, never for a tenant's.
    restricted: bool = True
    #: Vetted standard modules a tenant may import (names from KNOWN_MODULES).
    modules: frozenset[str] = field(default_factory=lambda: DEFAULT_MODULES)
    #: Largest module source accepted, in bytes.
    max_module_bytes: int = 1 * MiB
    #: Largest sum of all of a worker's module sources, in bytes.
    max_total_bytes: int = 4 * MiB
    #: Most modules one worker may ship.
    max_modules: int = 64
    #: Longest source line accepted, in characters (minified megabyte lines are refused).
    max_line_chars: int = 20_000
    #: Bytes of console output (print and console.log) kept per invocation; the rest is dropped.
    max_log_bytes: int = 64 * 1024
    #: Bytes of a result (response body or return value, encoded) a sandbox may send back.
    max_result_bytes: int = 8 * MiB
    os: OsLimits = field(default_factory=OsLimits)

    def __post_init__(self) -> None:
        unknown = set(self.modules) - KNOWN_MODULES
        if unknown:
            raise PolicyError(
                f"no vetted proxy for module(s) {sorted(unknown)}; "
                f"choose from {sorted(KNOWN_MODULES)}"
            )
        for name in (
            "max_module_bytes",
            "max_total_bytes",
            "max_modules",
            "max_line_chars",
            "max_log_bytes",
            "max_result_bytes",
        ):
            if getattr(self, name) <= 0:
                raise PolicyError(f"Policy.{name} must be > 0, got {getattr(self, name)}")
        if self.max_module_bytes > self.max_total_bytes:
            raise PolicyError("Policy.max_module_bytes must not exceed max_total_bytes")
        # Normalise to a frozenset so that equal policies hash equal whatever iterable was given.
        object.__setattr__(self, "modules", frozenset(self.modules))

    # presets -----------------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Policy:
        """RestrictedPython, a few pure modules, every OS layer the machine has."""
        return cls()

    @classmethod
    def strict(cls) -> Policy:
        """No standard modules at all, tighter memory and CPU."""
        return cls(
            modules=frozenset(),
            os=OsLimits(memory_bytes=256 * MiB, cpu_seconds=60),
        )

    @classmethod
    def trusted(cls) -> Policy:
        """Plain Python for code you wrote: no language layer, the OS layer still applies."""
        return cls(restricted=False)

    # copies ------------------------------------------------------------------------------------

    def with_modules(self, *names: str) -> Policy:
        return dataclasses.replace(self, modules=frozenset(names))

    def with_os(self, **changes: object) -> Policy:
        return dataclasses.replace(self, os=dataclasses.replace(self.os, **changes))  # type: ignore[arg-type]

    def with_limits(self, **changes: object) -> Policy:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    # identity ----------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """A short stable hash of every field: part of each compile-cache key."""
        data = dataclasses.asdict(self)
        data["modules"] = sorted(self.modules)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
