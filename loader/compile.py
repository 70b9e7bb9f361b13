"""Compile a worker's modules under the policy, all errors at once, through the cache.

Host side; CPU-bound, so the loader runs it in a worker thread. Every module is compiled even
after one fails, so that `CompileError` lists every problem with module and line, and so does
every import the sandbox would refuse (`loader.imports`). Size limits
(per module and in total, number of modules) are checked before anything is parsed; recursion
and memory errors from hostile source become compile errors (in `sandbox_policy.compiler`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from dynworkers.loader.cache import CompileCache, cache_key
from dynworkers.loader.code import Binding, Limits, WorkerCode
from dynworkers.loader.compile_process import compile_here
from dynworkers.loader.errors import CompileError, InvalidWorkerCode
from dynworkers.loader.imports import Imports, refusals, scan
from dynworkers.sandbox_policy import Policy, SourceRejected


@dataclass(frozen=True)
class CompiledModule:
    name: str
    source: str
    #: marshal of the code object
    code: bytes


@dataclass(frozen=True)
class CompiledWorker:
    """A worker ready to be specialised into any fresh sandbox, as often as needed."""

    worker_id: str
    main_module: str
    modules: tuple[CompiledModule, ...]
    #: plain data as msgpack, and bindings as they are
    data: tuple[tuple[str, bytes], ...]
    bindings: tuple[tuple[str, Binding], ...]
    global_outbound: Any
    limits: Limits
    version: str


def compile_worker(
    worker_id: str,
    code: WorkerCode,
    policy: Policy,
    cache: CompileCache,
    compiler: Callable[[str, str, Policy], bytes] = compile_here,
    scanner: Callable[[str], Imports] = scan,
) -> CompiledWorker:
    """Compile every module of `code` (through the cache) with `compiler`, which returns the
    marshalled code or raises SourceRejected (`compile_process` moves large ones out of the
    host process), and `scanner` parses a module's imports for the import check when the
    compile did not (its code came from the cache)."""
    errors: list[tuple[str, int | None, str]] = []
    if len(code.modules) > policy.max_modules:
        errors.append(
            ("*", None, f"{len(code.modules)} modules, over the limit of {policy.max_modules}")
        )
    total = sum(len(source.encode("utf-8", "surrogatepass")) for source in code.modules.values())
    if total > policy.max_total_bytes:
        errors.append(
            ("*", None, f"{total} bytes of source, over the limit of {policy.max_total_bytes}")
        )
    if errors:
        raise CompileError(worker_id, errors)
    compiled: list[CompiledModule] = []
    for name, source in code.modules.items():
        filename = f"{name}.py"
        key = cache_key(policy.version, filename, source)
        blob = cache.get(key)
        if blob is None:
            try:
                blob = compiler(source, filename, policy)
            except SourceRejected as rejected:
                errors.extend((name, line, message) for _, line, message in rejected.problems)
                continue
            cache.put(key, blob)
        compiled.append(CompiledModule(name=name, source=source, code=blob))
    errors.extend(refusals(code.modules, policy, scanner))
    if errors:
        raise CompileError(worker_id, errors)
    data, bindings = _split_env(worker_id, code)
    return CompiledWorker(
        worker_id=worker_id,
        main_module=code.main_module,
        modules=tuple(compiled),
        data=data,
        bindings=bindings,
        global_outbound=code.global_outbound,
        limits=code.limits or Limits(),
        version=code.source_hash,
    )


def _split_env(
    worker_id: str, code: WorkerCode
) -> tuple[tuple[tuple[str, bytes], ...], tuple[tuple[str, Binding], ...]]:
    data: list[tuple[str, bytes]] = []
    bindings: list[tuple[str, Binding]] = []
    for name, value in code.env.items():
        if isinstance(value, Binding):
            bindings.append((name, value))
            continue
        try:
            data.append((name, msgspec.msgpack.encode(value)))
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidWorkerCode(
                f"worker {worker_id!r}: env[{name!r}] is neither plain data nor a binding "
                f"({exc}); pass JSON-like data or a binding from supervisor.kv()/service()"
            ) from None
    return tuple(data), tuple(bindings)
