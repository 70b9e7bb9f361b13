"""Each package's public surface is its `__all__`: pinned here, so a change is deliberate."""

from __future__ import annotations

import importlib

import pytest

SURFACES = {
    "runtime": {
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
        "ProtocolError",
        "BootError",
        "PoolBusy",
        "SupervisorClosed",
        "CapabilityError",
    },
    "loader": {
        "Binding",
        "Limits",
        "WorkerCode",
        "EntrypointStub",
        "FetchResponse",
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
    "engine": {
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
    "runtime.daemon": {
        "Daemon",
        "DaemonConfig",
        "load_config",
        "HostBindings",
        "ConfigError",
        "InvalidTenant",
        "UnknownTenant",
        "DeployRefused",
    },
    "sandbox_policy": {
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
    import runtime

    assert issubclass(runtime.SandboxTimeout, TimeoutError)
    assert issubclass(runtime.PoolBusy, TimeoutError)
    assert issubclass(runtime.EntrypointNotFound, LookupError)
    assert issubclass(runtime.ResultError, ValueError)
    assert issubclass(runtime.CapabilityError, PermissionError)
    for name in runtime.__all__:
        value = getattr(runtime, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, runtime.DynworkersError), name


def test_unknown_runtime_name_is_an_attribute_error() -> None:
    import runtime

    with pytest.raises(AttributeError):
        runtime.NotAThing  # noqa: B018
