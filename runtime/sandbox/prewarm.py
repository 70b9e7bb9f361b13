"""The zygote's rehearsal: run, once in the zygote, the paths every sandbox runs after fork.

Runs in the zygote, in its only thread, before `gc.freeze()` and the first fork. CPython 3.11
writes into what it runs the first times it runs it: each function's warm-up counter and its
specialised instructions live inside the code object, per-type attribute caches fill on first
lookup, msgspec builds a type's encoder state on its first encode. In a forked sandbox each of
those writes copies a page it shares with the zygote (a minor fault, a 4 KiB copy, and a page of
the sandbox's own memory). Doing them here, enough times for the interpreter to settle, pays them
once in the zygote instead of once per sandbox: fewer faults per cold start (the churn figure)
and a smaller idle sandbox (the USS figure).

What runs: the host's warm-up worker (a harmless fetch handler, the same each spare runs once)
through a throwaway namespace, and the sandbox's side of the wire protocol (the messages a sandbox
decodes and encodes on its way to serving a call). Nothing here touches a socket, a file or a
signal.

Failures: none escape. A rehearsal that raises leaves the zygote as it was, only less warm.
"""

from __future__ import annotations

import contextlib

import zmq

from dynworkers.runtime import protocol
from dynworkers.runtime.sandbox import tenant
from dynworkers.sandbox_policy.policy import Policy

#: Rounds of each path: past the interpreter's warm-up delay (8 calls in 3.11), so that the
#: instructions a sandbox runs are specialised before the fork.
ROUNDS = 16


def rehearse(policy: Policy, warmup: list[protocol.ModuleCode]) -> None:
    """Run the sandbox's own paths `ROUNDS` times in this process; never raise."""
    with contextlib.suppress(Exception):
        _channel()
    with contextlib.suppress(Exception):
        for _ in range(ROUNDS):
            _codecs()
            if warmup:
                tenant.warm_up(tenant.blank_prepared(policy), warmup)


def _codecs() -> None:
    """The sandbox's side of the protocol: what it decodes, and what it encodes."""
    spec = protocol.Specialise(tenant_id="warm-up", main_module="main", modules=[], env=[])
    invoke = protocol.Invoke(request_id=1, entrypoint=None, method="fetch", args=b"\x90")
    reply = protocol.BindingReply(request_id=1, ok=True, value=protocol.encode(None))
    received: list[protocol.Message] = [protocol.Welcome(), spec, invoke, reply]
    sent: list[protocol.Message] = [
        protocol.Hello(token=b"0" * 16, pid=1),
        protocol.Ready(active_layers=[], unavailable=[]),
        protocol.Specialised(),
        protocol.Returned(request_id=1, value=b"\xc0"),
    ]
    for message in received:
        protocol.to_sandbox.decode(protocol.encode(message))
    for message in sent:
        protocol.encode(message)


def _channel() -> None:
    """A sandbox's ZeroMQ calls (context, PAIR socket, connect, send, poll, recv), between two
    sockets of this process over inproc://. The context is terminated before returning: it never
    crosses a fork, and the zygote is single-threaded again (term joins ZeroMQ's threads)."""
    context = zmq.Context(io_threads=1)
    try:
        host, sandbox = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
        try:
            for end in (host, sandbox):
                end.setsockopt(zmq.LINGER, 0)
            host.bind("inproc://rehearsal")
            sandbox.connect("inproc://rehearsal")
            for _ in range(ROUNDS):
                sandbox.send(protocol.encode(protocol.Hello(token=b"0" * 16, pid=1)))
                host.poll(1000)
                host.recv()
                host.send(protocol.encode(protocol.Welcome()), copy=True)
                sandbox.poll(1000)
                protocol.to_sandbox.decode(sandbox.recv())
        finally:
            host.close(linger=0)
            sandbox.close(linger=0)
    finally:
        context.term()
