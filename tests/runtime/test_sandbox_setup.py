"""What a sandbox sets up after fork: the namespace the zygote built before it, and the warm-up
worker run through that namespace without leaving anything behind for the tenant."""

from __future__ import annotations

import os

import zmq

from dynworkers.loader import CompileCache, WorkerCode, compile_worker
from dynworkers.runtime import protocol
from dynworkers.runtime.sandbox import prewarm, tenant
from dynworkers.runtime.supervisor import WARMUP_SOURCE
from dynworkers.sandbox_policy import Policy

TENANT = """
def on_fetch(request):
    print("hello from the tenant")
    return Response("ok")

from workers import Response
"""


def _modules(policy: Policy, worker_id: str, source: str) -> list[protocol.ModuleCode]:
    worker = compile_worker(
        worker_id, WorkerCode("main", {"main": source}), policy, CompileCache(None)
    )
    return [protocol.ModuleCode(name=m.name, source=m.source, code=m.code) for m in worker.modules]


def test_warm_up_sends_nothing_and_leaves_the_namespace_to_the_tenant() -> None:
    policy = Policy.default()
    context = zmq.Context()
    host, sandbox = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        host.bind("inproc://channel")
        sandbox.connect("inproc://channel")
        prepared = tenant.blank_prepared(policy)  # as the zygote builds it before fork
        prepared.bridge.socket = sandbox  # as the forked sandbox does once connected
        tenant.warm_up(prepared, _modules(policy, "warm-up", WARMUP_SOURCE))
        assert not host.poll(0), "the warm-up sent a frame on the sandbox's channel"
        assert prepared.tenant is None and prepared.outbound == [0]
        assert prepared.bridge.socket is sandbox

        spec = protocol.Specialise(
            tenant_id="acme",
            main_module="main",
            modules=_modules(policy, "acme", TENANT),
            env=[],
        )
        code = tenant.TenantCode(spec, prepared)
        request = protocol.encode([[["GET", "http://acme/", [], b""]], {}])
        code.invoke(protocol.Invoke(request_id=1, entrypoint=None, method="fetch", args=request))
        assert host.poll(1000), "the tenant's print did not reach the host's end of the channel"
        log = protocol.from_sandbox.decode(host.recv())
        assert isinstance(log, protocol.Log) and "hello from the tenant" in log.message
        assert prepared.tenant is code
    finally:
        host.close(linger=0)
        sandbox.close(linger=0)
        context.term()


def test_the_zygote_rehearsal_never_raises_even_with_a_broken_warm_up_worker() -> None:
    policy = Policy.default()
    broken = [protocol.ModuleCode(name="main", source="x", code=b"not marshal data")]
    prewarm.rehearse(policy, broken)  # an optimisation only: a bad worker leaves a cold zygote
    prewarm.rehearse(policy, [])


def test_the_zygote_rehearsal_leaves_no_zeromq_thread_behind() -> None:
    """The rehearsal runs ZeroMQ in the zygote; a thread left running would not survive a fork
    (the sandbox would inherit a context without its I/O thread)."""
    threads_before = sorted(os.listdir("/proc/self/task"))
    prewarm.rehearse(Policy.default(), [])
    assert sorted(os.listdir("/proc/self/task")) == threads_before
