"""A sandbox process: set itself up after fork, then serve one tenant until it is killed.

Runs in the child the zygote just forked, in its only thread (plus ZeroMQ's I/O thread). The set-up
is one ordered function, `main`:

1. signals back to defaults, file descriptors closed or pointed at /dev/null, environment
   emptied, random reseeded;
2. process limits (rlimits, parent-death signal, not dumpable, no_new_privs);
3. a new ZeroMQ context (a context never crosses a fork), connect, Hello with the host's token,
   wait for Welcome: the channel lives in a private directory that the dropped uid cannot open,
   so the connection is made before step 4;
4. confinement (uid drop, RLIMIT_NPROC, Landlock, seccomp);
5. the tenant namespace (`Prepared`), a warm-up worker run through it with its sends going
   nowhere (it pays the copy-on-write faults of a first specialisation and call), and Ready to
   the host.

Then the loop: Specialise once, Invoke many. Nothing raises out of the loop: every failure is a
`Failed` reply. A frame from the host that does not decode ends the process (the host is broken,
or something impersonates it). The process never returns: it ends with `os._exit`.
"""

from __future__ import annotations

import os
import signal
from typing import NoReturn

import zmq

from dynworkers.runtime import protocol
from dynworkers.runtime.sandbox import tenant as tenant_code
from dynworkers.runtime.sandbox.bridge import Bridge, FrameTooLarge
from dynworkers.sandbox_policy import proxies
from dynworkers.sandbox_policy.hardening import PreparedHardening

HANDSHAKE_TIMEOUT_MS = 10_000


def main(
    request: protocol.ForkRequest,
    hardening: PreparedHardening,
    prepared: tenant_code.Prepared,
    warmup: list[protocol.ModuleCode] | None = None,
    close_fds: tuple[int, ...] = (),
) -> NoReturn:
    """Set up this sandbox and serve. `prepared` is the zygote's, built before the fork: this
    process's copy becomes its tenant's namespace once its bridge has the channel."""
    status = 0
    try:
        _reset_process(close_fds)
        hardening.apply_process_limits()
        context = zmq.Context(io_threads=1)
        socket = _connect(context, request)
        report = hardening.apply_confinement()
        bridge = prepared.bridge
        bridge.socket = socket
        if warmup:
            tenant_code.warm_up(prepared, warmup)
        socket.send(
            protocol.encode(
                protocol.Ready(
                    active_layers=list(report.active),
                    unavailable=[(layer, reason) for layer, reason in report.unavailable],
                )
            )
        )
        serve(socket, prepared)
    except BaseException:
        status = 70
    os._exit(status)


def _reset_process(close_fds: tuple[int, ...]) -> None:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the host, which decides
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for fd in close_fds:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the zygote's pipes to the host are never the tenant's
        os.dup2(devnull, fd)
    os.close(devnull)
    os.environ.clear()  # the zygote's environment is minimal already; a tenant gets none of it
    proxies.reseed()


def _connect(
    context: zmq.Context[zmq.Socket[bytes]], request: protocol.ForkRequest
) -> zmq.Socket[bytes]:
    socket = context.socket(zmq.PAIR)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(request.endpoint)
    socket.send(protocol.encode(protocol.Hello(token=request.token, pid=os.getpid())))
    if not socket.poll(HANDSHAKE_TIMEOUT_MS):
        os._exit(71)
    if not isinstance(protocol.to_sandbox.decode(socket.recv()), protocol.Welcome):
        os._exit(72)
    return socket


def serve(socket: zmq.Socket[bytes], prepared: tenant_code.Prepared) -> NoReturn:
    bridge = prepared.bridge
    code: tenant_code.TenantCode | None = None
    failure: protocol.ErrorInfo | None = None
    while True:
        try:
            message = protocol.to_sandbox.decode(socket.recv())
        except Exception:
            os._exit(73)
        if isinstance(message, protocol.Invoke):
            # The host pipelines the first Invoke behind Specialise; if the tenant's modules
            # failed, every call gets that failure and the host ends this sandbox.
            _reply(bridge, _invoke(code, message, failure))
        elif isinstance(message, protocol.Specialise):
            code, reply = _specialise(code, message, prepared)
            failure = reply.error
            _reply(bridge, reply)


def _reply(
    bridge: Bridge, reply: protocol.Returned | protocol.Failed | protocol.Specialised
) -> None:
    """Send a reply; one over the frame limit becomes a small error naming its size."""
    try:
        bridge.send(reply)
    except FrameTooLarge as exc:
        error = protocol.ErrorInfo(
            kind="result",
            type_name="ValueError",
            message=f"the reply is {exc.size} bytes, over the channel's frame limit of "
            f"{exc.limit} bytes: return less, or raise Policy.max_result_bytes",
        )
        if isinstance(reply, protocol.Specialised):
            bridge.send(protocol.Specialised(error=error))
        else:
            bridge.send(protocol.Failed(request_id=reply.request_id, error=error))


def _specialise(
    current: tenant_code.TenantCode | None,
    message: protocol.Specialise,
    prepared: tenant_code.Prepared,
) -> tuple[tenant_code.TenantCode | None, protocol.Specialised]:
    if current is not None:  # one tenant for the whole life of a sandbox
        return current, protocol.Specialised(
            error=protocol.ErrorInfo(
                kind="protocol", type_name="RuntimeError", message="sandbox already specialised"
            )
        )
    files = {f"{m.name}.py": m.source for m in message.modules}
    try:
        return tenant_code.TenantCode(message, prepared), protocol.Specialised()
    except Exception as exc:
        return None, protocol.Specialised(error=tenant_code.error_info("specialise", exc, files))


def _invoke(
    code: tenant_code.TenantCode | None,
    message: protocol.Invoke,
    failure: protocol.ErrorInfo | None,
) -> protocol.Returned | protocol.Failed:
    if code is None:
        return protocol.Failed(
            request_id=message.request_id,
            error=failure
            or protocol.ErrorInfo(
                kind="protocol", type_name="RuntimeError", message="sandbox not specialised"
            ),
        )
    try:
        return protocol.Returned(request_id=message.request_id, value=code.invoke(message))
    except tenant_code.TenantFailure as failure:
        return protocol.Failed(request_id=message.request_id, error=failure.info)
    except Exception as exc:  # a bug of ours, reported rather than raised
        return protocol.Failed(
            request_id=message.request_id,
            error=protocol.ErrorInfo(
                kind="internal", type_name=type(exc).__name__, message=str(exc)
            ),
        )
