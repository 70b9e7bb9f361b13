"""What a host hands the loader: a worker's modules, env and limits.

Host side; plain data with no behaviour beyond validation. `WorkerCode` follows Cloudflare's
Worker Loader: `main_module` names one of `modules`, which maps module names to source text.
Names are file names as on Cloudflare (`"entry.py"`, imported as `import entry`) or plain module
names (`"entry"`); both are kept as the module name without `.py`, so `main_module="entry.py"`
and `modules={"entry": ...}` agree. Directories in names are refused.
Values in `env` are either plain data (copied into the sandbox) or `Binding` objects (the
sandbox gets an RPC stub whose calls the host checks against its capability table).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dynworkers.loader.errors import InvalidWorkerCode

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: Names a tenant module may not take: they would shadow the runtime's API or a vetted module.
RESERVED_MODULES = frozenset({"workers"})


class Binding:
    """A host-side object that a sandbox reaches only through an RPC stub.

    Subclasses (in `runtime`) say which `methods` tenant code may call and implement `call`.
    """

    kind: str = "binding"
    methods: frozenset[str] = frozenset()

    async def call(
        self, tenant_id: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        raise NotImplementedError

    def handover(self) -> Any:
        """Plain data sent along when the binding is passed as a call argument (a per-call
        grant); the sandbox's stub carries it as `data`."""
        return None

    def granted(self, control: Any) -> None:
        """Called when the binding is granted for one call; `control` can move that call's
        deadline (`control.set_deadline(seconds)`)."""


@dataclass(frozen=True)
class Limits:
    """Per-worker overrides of the supervisor's defaults; None keeps the default."""

    #: Seconds an invocation may run before its sandbox is killed.
    deadline: float | None = None
    #: Resident memory ceiling of the worker's sandbox, in MiB, checked by the supervisor.
    memory_mb: int | None = None

    def __post_init__(self) -> None:
        if self.deadline is not None and not 0 < self.deadline <= 3600:
            raise InvalidWorkerCode(
                f"Limits.deadline must be in (0, 3600] seconds, got {self.deadline}"
            )
        if self.memory_mb is not None and self.memory_mb < 16:
            raise InvalidWorkerCode(f"Limits.memory_mb must be >= 16, got {self.memory_mb}")


def _module_name(given: Any) -> Any:
    """`"util.py"` -> `"util"`; anything else unchanged (validated by the caller)."""
    if isinstance(given, str) and given.endswith(".py"):
        if "/" in given or "\\" in given:
            raise InvalidWorkerCode(
                f"module name {given!r} has a directory; name modules by file name only "
                "('util.py'), as they are imported ('import util')"
            )
        return given[:-3]
    return given


@dataclass(frozen=True)
class WorkerCode:
    main_module: str
    modules: Mapping[str, str]
    env: Mapping[str, Any] = field(default_factory=dict)
    #: None: the tenant's fetch() raises. A host callable receives its outbound requests.
    global_outbound: Any = None
    limits: Limits | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.modules, Mapping) or not self.modules:
            raise InvalidWorkerCode("WorkerCode.modules must map module names to source text")
        modules: dict[str, Any] = {}
        for given, source in self.modules.items():
            name = _module_name(given)
            if name in modules:
                raise InvalidWorkerCode(
                    f"module {given!r} is given twice (as {name!r} and {name + '.py'!r})"
                )
            modules[name] = source
        object.__setattr__(self, "modules", modules)
        object.__setattr__(self, "main_module", _module_name(self.main_module))
        for name, source in self.modules.items():
            if not isinstance(name, str) or not _MODULE_NAME.match(name):
                raise InvalidWorkerCode(
                    f"module name {name!r} is not a plain identifier (letters, digits, _; <= 64)"
                )
            if name in RESERVED_MODULES:
                raise InvalidWorkerCode(f"module name {name!r} is reserved by the runtime")
            if not isinstance(source, str):
                raise InvalidWorkerCode(
                    f"module {name!r}: source must be str, got {type(source).__name__}"
                )
        if self.main_module not in self.modules:
            raise InvalidWorkerCode(
                f"main_module {self.main_module!r} is not among the modules {sorted(self.modules)}"
            )
        for key in self.env:
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
                raise InvalidWorkerCode(
                    f"env name {key!r} must be an identifier without a leading _"
                )
        if self.global_outbound is not None and not callable(self.global_outbound):
            raise InvalidWorkerCode("global_outbound must be None or a callable")
        if self.limits is not None and not isinstance(self.limits, Limits):
            raise InvalidWorkerCode("limits must be a loader.Limits")

    @property
    def source_hash(self) -> str:
        digest = hashlib.sha256(self.main_module.encode())
        for name in sorted(self.modules):
            digest.update(b"\0" + name.encode() + b"\0" + self.modules[name].encode())
        return digest.hexdigest()
