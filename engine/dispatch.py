"""Dynamic dispatch: one registered workflow serves every tenant.

Host side, on the engine's event loop. A tenant's env holds `wrap_workflow_binding(metadata)`;
its `create(params=p)` persists the envelope `{"__dispatcherMetadata": metadata, "params": p}`
under the calling tenant (the sandbox's channel says who calls; a tenant sees and touches only
its own instances, and its ids live in their own namespace, `<tenant>/<id>` on the host).

`create_dynamic_workflow_entrypoint(load_runner)` is what the host registers: on every wake-up it
unwraps the envelope and asks `load_runner(metadata, env, ctx)` for the tenant's runner
(typically `supervisor.loader.get(...).get_entrypoint("TenantWorkflow")`), then runs it with the
engine's step binding. `ctx.version` is the tenant code version the instance pinned, when
pinning is on: the loader callback decides whether a redeploy reaches a sleeping instance.

Errors: `MissingDispatcherMetadataError` when the envelope is absent; a binding call with bad
input fails with the engine's typed error, whose message the tenant receives.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dynworkers.engine import rules
from dynworkers.engine.errors import InvalidInput, MissingDispatcherMetadataError, UnknownWorkflow
from dynworkers.engine.store import InstanceNotFound
from dynworkers.loader import Binding, stub_worker

if TYPE_CHECKING:
    from dynworkers.engine.engine import Engine

ENVELOPE_KEY = "__dispatcherMetadata"


def envelope(metadata: Any, params: Any) -> dict[str, Any]:
    """`create()` without params runs with payload `{}`, as Cloudflare's."""
    return {ENVELOPE_KEY: metadata, "params": {} if params is None else params}


@dataclass(frozen=True)
class WorkflowContext:
    """What `load_runner` receives as `ctx`."""

    instance_id: str
    workflow_name: str
    #: the tenant whose binding created the instance (None for host-created instances)
    tenant: str | None
    #: the tenant code version the instance pinned, or None (not pinned yet, or pinning off)
    version: str | None


async def run_runner(runner: Any, event: dict[str, Any], step: Binding) -> Any:
    """Run a tenant's workflow: `runner.run(event, step)` through its loader stub."""
    before_run = getattr(step, "before_run", None)
    if before_run is not None:
        before_run(stub_worker(runner))
    return await runner.run(event, step)


async def dispatch_workflow(
    event: dict[str, Any],
    step: Binding,
    load_runner: Callable[..., Any],
    env: Any = None,
    ctx: WorkflowContext | None = None,
) -> Any:
    """Unwrap the envelope, find the tenant's runner, run it; the primitive beneath the
    dynamic entrypoint."""
    payload = event.get("payload")
    if not isinstance(payload, dict) or ENVELOPE_KEY not in payload or "params" not in payload:
        raise MissingDispatcherMetadataError(
            f"instance {event.get('instance_id')!r} has no {ENVELOPE_KEY!r} envelope (with its "
            "'params') in its params: create instances of a dynamic workflow through "
            "wrap_workflow_binding(...)"
        )
    runner = load_runner(payload[ENVELOPE_KEY], env, ctx)
    if inspect.isawaitable(runner):
        runner = await runner
    return await run_runner(runner, {**event, "payload": payload.get("params")}, step)


class DynamicWorkflowEntrypoint:
    """What `create_dynamic_workflow_entrypoint` returns; register it with the engine."""

    def __init__(self, load_runner: Callable[..., Any], pin_versions: bool = False) -> None:
        if not callable(load_runner):
            raise TypeError("load_runner must be callable: (metadata, env, ctx) -> runner")
        self.load_runner = load_runner
        self.pin_versions = pin_versions

    async def dispatch(
        self, engine: Engine, event: dict[str, Any], step: Binding, ctx: WorkflowContext
    ) -> Any:
        load = self.load_runner
        if self.pin_versions and ctx.version is None:

            async def load_and_pin(metadata: Any, env: Any, ctx: WorkflowContext) -> Any:
                runner = self.load_runner(metadata, env, ctx)
                if inspect.isawaitable(runner):
                    runner = await runner
                worker = stub_worker(runner)
                if worker is not None:
                    await engine.store.update_instance(ctx.instance_id, version=worker.version)
                return runner

            load = load_and_pin
        return await dispatch_workflow(event, step, load, engine.env, ctx)


def create_dynamic_workflow_entrypoint(
    load_runner: Callable[..., Any], *, pin_versions: bool = False
) -> DynamicWorkflowEntrypoint:
    """One workflow for every tenant: `load_runner(metadata, env, ctx)` returns the runner.

    With `pin_versions=True` an instance records the version of the runner of its first
    wake-up and later wake-ups get it as `ctx.version`."""
    return DynamicWorkflowEntrypoint(load_runner, pin_versions)


class WorkflowsBinding(Binding):
    """`env.WORKFLOWS` of a tenant: creates and finds that tenant's instances only."""

    kind = "workflow"
    methods = frozenset(
        {
            "create",
            "create_batch",
            "get",
            "status",
            "pause",
            "resume",
            "terminate",
            "restart",
            "send_event",
            "delete",
            "delete_batch",
            "history",
        }
    )

    def __init__(
        self, metadata: Any, binding_name: str, engine: Engine | None, workflow: str | None
    ) -> None:
        self.metadata = metadata
        #: whose instances this binding sees: the metadata's tenant_id (set by the host, so a
        #: tenant cannot forge it), else the calling sandbox's worker id
        self.scope: str | None = None
        if isinstance(metadata, dict) and isinstance(metadata.get("tenant_id"), str):
            self.scope = metadata["tenant_id"]
        self.binding_name = binding_name
        self._engine = engine
        self._workflow = workflow
        #: a binding that names its workflow (metadata "workflow", as a wrangler `workflows`
        #: entry does) keeps its instance ids apart from every other workflow's
        named = metadata.get("workflow") if isinstance(metadata, dict) else None
        self.namespace: str | None = None
        if isinstance(named, str) and rules.WORKFLOW_NAME.fullmatch(named):
            self.namespace = named

    def _target(self) -> tuple[Engine, str]:
        from dynworkers.engine.engine import running_engine

        engine = self._engine or running_engine()
        if self._workflow is not None:
            return engine, engine.workflow(self._workflow).name
        dynamic = [
            name
            for name, workflow in engine.workflows.items()
            if isinstance(workflow.entrypoint, DynamicWorkflowEntrypoint)
        ]
        if len(dynamic) != 1:
            raise UnknownWorkflow(
                f"binding {self.binding_name!r}: {len(dynamic)} dynamic workflows are "
                "registered; pass workflow= to wrap_workflow_binding"
            )
        return engine, dynamic[0]

    async def _own(self, engine: Engine, tenant_id: str, local_id: object) -> str:
        """The engine id of the tenant's instance `local_id`; unknown to every other tenant.
        A malformed id is refused as invalid, never looked up. A binding without a workflow
        of its own (the host's, the control API's) may name one: `<workflow>:<id>`."""
        namespace = self.namespace
        bare = local_id
        if namespace is None and isinstance(local_id, str) and rules.WORKFLOW_SEPARATOR in local_id:
            namespace, _, bare = local_id.partition(rules.WORKFLOW_SEPARATOR)
            if not rules.WORKFLOW_NAME.fullmatch(namespace):
                raise InvalidInput(f"instance id {local_id!r} is not valid")
        try:
            rules.check_instance_id(bare)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        scoped = bare if namespace is None else f"{namespace}{rules.WORKFLOW_SEPARATOR}{bare}"
        instance_id = f"{tenant_id}/{scoped}"
        try:
            record = await engine.record(instance_id)
        except InstanceNotFound:
            record = None
        if record is None or record.tenant != tenant_id:
            raise InstanceNotFound(f"no workflow instance {local_id!r}")
        return instance_id

    async def call(
        self, tenant_id: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        engine, workflow = self._target()
        tenant_id = self.scope or tenant_id
        ns = self.namespace
        if method == "create":
            instance_id, params = ([*list(args), None, None])[:2]
            items = [(instance_id, envelope(self.metadata, params))]
            (created,) = await engine.create(
                workflow, items, tenant=tenant_id, strict=True, namespace=ns
            )
            return rules.local_id(created, tenant_id)
        if method == "create_batch":
            pairs = engine.batch_items(args[0] if args else None)
            items = [(i, envelope(self.metadata, p)) for i, p in pairs]
            batch = await engine.create(workflow, items, tenant=tenant_id, namespace=ns)
            return [rules.local_id(i, tenant_id) for i in batch]
        if method == "delete_batch":
            ids = args[0] if args else None
            if not isinstance(ids, list) or not ids or len(ids) > rules.MAX_BATCH:
                raise InvalidInput(
                    f"delete_batch takes a list of 1 to {rules.MAX_BATCH} instance ids"
                )
            owned = [await self._own(engine, tenant_id, i) for i in ids]
            for instance_id in owned:
                await engine.delete(instance_id)
            return len(owned)
        if not args:
            raise InvalidInput(f"{method}() needs an instance id")
        instance_id = await self._own(engine, tenant_id, args[0])
        if method == "get":
            return args[0]
        if method == "status":
            return await engine.status(instance_id)
        if method == "history":
            view = await engine.history(instance_id)
            view["id"] = rules.local_id(view["id"], tenant_id)
            return view
        if method == "terminate":
            return await engine.terminate(instance_id, bool(args[1]) if len(args) > 1 else False)
        if method == "restart":
            return await engine.restart(instance_id, *args[1:2])
        if method == "send_event":
            event_type, payload = ([*list(args[1:]), None, None])[:2]
            return await engine.send_event(instance_id, event_type, payload)
        operation = getattr(engine, method)  # pause, resume, terminate, delete
        return await operation(instance_id)

    def __repr__(self) -> str:
        return f"<WorkflowsBinding {self.binding_name} {self.metadata!r}>"


def wrap_workflow_binding(
    metadata: Any,
    binding_name: str = "WORKFLOWS",
    *,
    engine: Engine | None = None,
    workflow: str | None = None,
) -> WorkflowsBinding:
    """A binding for a tenant's env: its `create(params=p)` persists the envelope
    `{"__dispatcherMetadata": metadata, "params": p}`.

    The engine defaults to the one running in this process, the workflow to its only dynamic
    workflow; `binding_name` names the binding in messages."""
    return WorkflowsBinding(metadata, binding_name, engine, workflow)
