"""The host's record of one sandbox process: its channel, its tenant, its capabilities.

Host side, on the supervisor's event loop. A handle goes booting -> spare -> specialised (one
tenant, for its whole life) -> dead. A specialised handle belongs to its tenant's
`TenantSandboxes` (`group`) and runs one call at a time: the pool hands it to one caller, who
releases it. It serves binding calls that arrive on its channel against
its own capability table, with its own tenant id, and forwards console records to the log.

It never kills its process itself: the pool decides (and records why), the zygote signals. When
the process is gone, every call pending on it fails at once with the error the pool gives.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import TYPE_CHECKING, Any

from dynworkers.loader import Binding, CompiledWorker
from dynworkers.runtime import protocol, tracing
from dynworkers.runtime.bindings import (
    BindingRateLimit,
    CapabilityTable,
    OutboundBinding,
    binding_failure,
)
from dynworkers.runtime.channel import Channel
from dynworkers.runtime.errors import BindingRateLimited, CapabilityError

if TYPE_CHECKING:
    from dynworkers.runtime.tenant_sandboxes import TenantSandboxes

log = logging.getLogger("dynworkers.handle")
tenant_log = logging.getLogger("dynworkers.tenant")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class SandboxHandle:
    def __init__(
        self, sandbox_id: int, channel: Channel, rate_limit: BindingRateLimit | None = None
    ) -> None:
        self.id = sandbox_id
        self.channel = channel
        self.rate_limit = rate_limit
        self.pid = 0
        self.tenant_id: str | None = None
        self.worker: CompiledWorker | None = None
        self.capabilities = CapabilityTable()
        self.state = "booting"
        self.last_used = time.monotonic()
        self.users = 0  # 1 while a call holds this sandbox, else 0
        self.group: TenantSandboxes | None = None  # its tenant's sandboxes, once specialised
        self.kind = 0  # the kind of the call holding it (tenant_sandboxes.REQUEST or WAKEUP)
        self.layers: list[str] = []
        self.unavailable: list[tuple[str, str]] = []
        self.exit_reason: str | None = None
        self.memory_limit = 0  # bytes of RSS; 0 = none
        self.retired = False  # replaced by a newer version of its worker; ends when released
        self._binding_tasks: set[asyncio.Task[None]] = set()
        #: with tracing on, the context of the call holding this sandbox: its binding calls run
        #: in a copy, so that their spans are that call's children
        self.trace_context: contextvars.Context | None = None

    @property
    def alive(self) -> bool:
        return self.state in ("booting", "spare", "specialised")

    def __repr__(self) -> str:
        return f"<sandbox {self.id} pid={self.pid} {self.state} tenant={self.tenant_id!r}>"

    # --- specialisation --------------------------------------------------------------------------

    def specialise_message(self, worker: CompiledWorker) -> protocol.Specialise:
        """Grant the worker's bindings in this sandbox's table and describe it for the sandbox."""
        env = [
            protocol.EnvEntry(name=name, kind="data", value=value) for name, value in worker.data
        ]
        for name, binding in worker.bindings:
            env.append(
                protocol.EnvEntry(
                    name=name,
                    kind=binding.kind,
                    capability=self.capabilities.grant(binding),
                    methods=sorted(binding.methods),
                )
            )
        outbound = 0
        if worker.global_outbound is not None:
            outbound = self.capabilities.grant(OutboundBinding(worker.global_outbound))
        return protocol.Specialise(
            tenant_id=worker.worker_id,
            main_module=worker.main_module,
            modules=[
                protocol.ModuleCode(name=m.name, source=m.source, code=m.code)
                for m in worker.modules
            ],
            env=env,
            outbound=outbound,
        )

    # --- messages from the sandbox ---------------------------------------------------------------

    def on_message(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.BindingCall):
            context = None if self.trace_context is None else self.trace_context.copy()
            task = asyncio.get_running_loop().create_task(
                self._serve_binding(message), context=context
            )
            self._binding_tasks.add(task)
            task.add_done_callback(self._binding_tasks.discard)
        elif isinstance(message, protocol.Log):
            tenant_log.log(
                _LEVELS.get(message.level, logging.INFO),
                "%s",
                message.message,
                extra={"tenant_id": self.tenant_id, "tenant_timestamp": message.timestamp},
            )

    async def _serve_binding(self, call: protocol.BindingCall) -> None:
        reply = await self._binding_reply(call)
        if call.request_id == 0:  # a notification: nobody waits for the reply
            if not reply.ok and reply.error is not None:
                log.debug("notification from %r failed: %s", self, reply.error.message)
            return
        if self.alive and not self.channel.closed:
            self.channel.send(reply)

    # --- per-call grants -------------------------------------------------------------------------

    def grant_arguments(self, args: list[Any]) -> list[protocol.Grant]:
        """Grant each Binding among `args` in this sandbox's table, for one call."""
        grants = []
        for position, value in enumerate(args):
            if isinstance(value, Binding):
                entry = protocol.EnvEntry(
                    name=f"arg{position}",
                    kind=value.kind,
                    value=protocol.encode(value.handover()),
                    capability=self.capabilities.grant(value),
                    methods=sorted(value.methods),
                )
                grants.append(protocol.Grant(position=position, entry=entry))
        return grants

    def revoke(self, grants: list[protocol.Grant]) -> None:
        for grant in grants:
            self.capabilities.revoke(grant.entry.capability)

    async def _binding_reply(self, call: protocol.BindingCall) -> protocol.BindingReply:
        limit = self.rate_limit
        if limit is not None and self.tenant_id is not None and not limit.allow(self.tenant_id):
            refused = BindingRateLimited(
                f"tenant {self.tenant_id!r} made binding calls faster than the host allows "
                f"({limit.rate:g} a second, bursts of {limit.burst:g}): call {call.method!r} "
                "was refused; slow down and retry, or ask the host to raise "
                "SupervisorConfig.binding_calls_per_second"
            )
            return _error_reply(call.request_id, "rate_limit", refused)
        binding = self.capabilities.check(call.capability, call.method)
        if binding is None or self.tenant_id is None:
            error = CapabilityError(
                f"capability {call.capability} method {call.method!r} is not granted to tenant "
                f"{self.tenant_id!r}"
            )
            return _error_reply(call.request_id, "capability", error)
        try:
            args, kwargs = protocol.decode_plain(call.args)
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("binding arguments must be [args, kwargs]")
            if tracing.ENABLED and binding.kind not in tracing.UNTRACED_BINDINGS:
                with tracing.binding_span(self.tenant_id, binding.kind, call.method):
                    result = await binding.call(self.tenant_id, call.method, args, kwargs)
            else:
                result = await binding.call(self.tenant_id, call.method, args, kwargs)
            return protocol.BindingReply(
                request_id=call.request_id, ok=True, value=protocol.encode(result)
            )
        except Exception as exc:  # bad arguments, or the host's binding code failed
            failure = binding_failure(exc, self.tenant_id, call.method)
            return protocol.BindingReply(request_id=call.request_id, ok=False, error=failure)

    def cancel_bindings(self) -> None:
        for task in self._binding_tasks:
            task.cancel()


def _error_reply(request_id: int, kind: str, exc: BaseException) -> protocol.BindingReply:
    return protocol.BindingReply(
        request_id=request_id,
        ok=False,
        error=protocol.ErrorInfo(kind=kind, type_name=type(exc).__name__, message=str(exc)),
    )
