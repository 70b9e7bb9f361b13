"""Each package's public surface is its `__all__`: pinned here, so a change is deliberate."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

SURFACES = {
    "dynworkers.runtime": {
        # embedding
        "Supervisor",
        "SupervisorConfig",
        "BlockingSupervisor",
        # bindings
        "KVBinding",
        "ServiceBinding",
        "ServiceContext",
        "OutboundRequest",
        "OutboundResponse",
        # errors
        "DynworkersError",
        "TenantError",
        "EntrypointNotFound",
        "ResultError",
        "SpecialiseError",
        "SandboxError",
        "SandboxTimeout",
        "SandboxCrashed",
        "MemoryLimitExceeded",
        "ProtocolError",
        "BootError",
        "PoolBusy",
        "SupervisorClosed",
        "CapabilityError",
        "BindingRateLimited",
        "StateDirInUse",
        "StateDirUnusable",
    },
    "dynworkers.loader": {
        "Binding",
        "Limits",
        "WorkerCode",
        "EntrypointStub",
        "FetchResponse",
        "LazyEntrypoint",
        "LazyWorker",
        "WorkerLoader",
        "WorkerStub",
        "stub_worker",
        "CompileCache",
        "CompiledModule",
        "CompiledWorker",
        "Dispatcher",
        "compile_worker",
        "CompileError",
        "InvalidWorkerCode",
        "LoaderError",
    },
    "dynworkers.engine": {
        # embedding
        "Engine",
        "Workflow",
        "Instance",
        "WorkflowEntrypoint",
        "NonRetryableError",
        "Clock",
        "ManualClock",
        # dynamic dispatch
        "wrap_workflow_binding",
        "create_dynamic_workflow_entrypoint",
        "dispatch_workflow",
        "WorkflowContext",
        # stores
        "Store",
        "open_store",
        "EventRecord",
        "InstanceRecord",
        "StepRecord",
        # errors
        "EngineError",
        "StoreError",
        "InstanceExists",
        "InstanceNotFound",
        "InvalidInput",
        "InvalidTransition",
        "UnknownWorkflow",
        "MissingDispatcherMetadataError",
        "EngineClosed",
    },
    "dynworkers.runtime.daemon": {
        "Daemon",
        "DaemonConfig",
        "load_config",
        "HostBindings",
        "ConfigError",
        "InvalidTenant",
        "UnknownTenant",
        "DeployRefused",
        "ControlClient",
        "AsyncControlClient",
        "ControlError",
        "ControlInvalid",
        "ControlNotFound",
        "ControlUnavailable",
        "ControlUnauthorized",
    },
    "dynworkers.sandbox_policy": {
        "KNOWN_MODULES",
        "OsLimits",
        "Policy",
        "TenantNamespace",
        "compile_module",
        "register_safe_type",
        "HardeningReport",
        "PreparedHardening",
        "PolicyError",
        "SourceRejected",
    },
}


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_public_surface_is_exactly_the_pinned_names(package: str) -> None:
    module = importlib.import_module(package)
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    assert set(module.__all__) == SURFACES[package]


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_runtime_errors_subclass_the_builtin_with_the_same_meaning() -> None:
    from dynworkers import runtime

    assert issubclass(runtime.SandboxTimeout, TimeoutError)
    assert issubclass(runtime.PoolBusy, TimeoutError)
    assert issubclass(runtime.EntrypointNotFound, LookupError)
    assert issubclass(runtime.ResultError, ValueError)
    assert issubclass(runtime.CapabilityError, PermissionError)
    assert issubclass(runtime.MemoryLimitExceeded, MemoryError)
    for name in runtime.__all__:
        value = getattr(runtime, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, runtime.DynworkersError), name


def test_unknown_runtime_name_is_an_attribute_error() -> None:
    from dynworkers import runtime

    with pytest.raises(AttributeError):
        runtime.NotAThing  # noqa: B018


TOP_LEVEL = {
    "__version__",
    "Supervisor",
    "SupervisorConfig",
    "BlockingSupervisor",
    "WorkerCode",
    "Binding",
    "Limits",
    "WorkerStub",
    "KVBinding",
    "ServiceBinding",
    "ServiceContext",
    "OutboundRequest",
    "OutboundResponse",
    "Engine",
    "Workflow",
    "Instance",
    "WorkflowEntrypoint",
    "NonRetryableError",
    "Clock",
    "ManualClock",
    "wrap_workflow_binding",
    "create_dynamic_workflow_entrypoint",
    "dispatch_workflow",
    "WorkflowContext",
    "Policy",
    "OsLimits",
    "Daemon",
    "DaemonConfig",
    "ControlClient",
    "AsyncControlClient",
    "DynworkersError",
    "TenantError",
    "EntrypointNotFound",
    "ResultError",
    "SandboxError",
    "SandboxTimeout",
    "SandboxCrashed",
    "PoolBusy",
    "SupervisorClosed",
    "CapabilityError",
    "LoaderError",
    "CompileError",
    "InvalidWorkerCode",
    "EngineError",
    "StoreError",
    "InstanceExists",
    "InstanceNotFound",
    "InvalidInput",
    "InvalidTransition",
    "UnknownWorkflow",
    "EngineClosed",
    "PolicyError",
    "ControlError",
}


def test_import_dynworkers_is_the_public_api() -> None:
    import dynworkers

    assert set(dynworkers.__all__) == TOP_LEVEL
    assert len(dynworkers.__all__) == len(TOP_LEVEL)
    for name in dynworkers.__all__:
        assert getattr(dynworkers, name) is not None, name
    assert dynworkers.Supervisor is importlib.import_module("dynworkers.runtime").Supervisor
    assert (Path(dynworkers.__file__).parent / "py.typed").is_file()


def test_installed_package_is_dynworkers_alone(tmp_path: Path) -> None:
    """From a directory that is not the checkout, every module imports as `dynworkers.*` and no
    generic top-level package (`runtime`, `engine`, ...) is importable."""
    script = """
import importlib, json, pkgutil
import dynworkers
failed = []
for info in pkgutil.walk_packages(dynworkers.__path__, "dynworkers."):
    if info.name.startswith("dynworkers.benchmarks.") and "dbos" in info.name:
        continue  # needs the bench extra
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed.append(f"{info.name}: {exc!r}")
generic = [n for n in ("runtime", "engine", "loader", "sandbox_policy", "benchmarks")
           if importlib.util.find_spec(n) is not None]
print(json.dumps({"failed": failed, "generic": generic}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"failed": [], "generic": []}
