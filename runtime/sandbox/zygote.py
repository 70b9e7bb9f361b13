"""The zygote: a clean interpreter that forks sandboxes.

Runs as its own process (`python -m dynworkers.runtime.sandbox.zygote`), started by the host as
a fresh interpreter, never forked from it (the host may have threads). Single-threaded, no ZeroMQ
context:
a context never crosses a fork. It owns the process table of every sandbox: it forks on request,
reaps on SIGCHLD in a WNOHANG loop, kills on request, and reports each exit with its decoded status.

Protocol: stdin carries a JSON `Policy` frame, then `ToZygote` frames; stdout carries
`FromZygote` frames (see runtime.protocol). EOF on stdin means the host is gone or closing: kill
every sandbox, reap them, exit. The zygote dies with the host (parent-death signal); each sandbox
dies with the zygote.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import select
import signal
import sys

import msgspec

from dynworkers.runtime import protocol
from dynworkers.runtime.sandbox import child, prewarm, tenant
from dynworkers.sandbox_policy import landlock
from dynworkers.sandbox_policy.hardening import PreparedHardening
from dynworkers.sandbox_policy.policy import Policy

PR_SET_PDEATHSIG = 1


_SIGNAL_HINTS: dict[int, str] = {
    signal.SIGKILL: " (out of memory, deadline, or eviction)",
    signal.SIGSYS: " (seccomp: forbidden system call)",
    signal.SIGXCPU: " (CPU seconds limit)",
    signal.SIGXFSZ: " (file size limit)",
    signal.SIGSEGV: " (crash in native code or stack overflow)",
}


def describe_status(status: int) -> str:
    """Read a wait status the way an operator wants it: "killed by SIGSYS (seccomp: ...)"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}{_SIGNAL_HINTS.get(sig, '')}"
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return "exited cleanly" if code == 0 else f"exited with status {code}"
    return f"wait status {status:#x}"


class Zygote:
    def __init__(self, policy: Policy, warmup: list[protocol.ModuleCode]) -> None:
        self.policy = policy
        self.warmup = warmup
        # Everything a sandbox needs is imported by now: what Landlock lets it read follows.
        self.hardening = PreparedHardening.prepare(policy.os, landlock.readable_paths())
        # Each sandbox's namespace, built once here: a fork gives every sandbox its own copy,
        # and building it costs each of them a few hundred copy-on-write faults otherwise.
        self.prepared = tenant.blank_prepared(policy)
        self.children: dict[int, int] = {}  # pid -> sandbox_id
        self.by_sandbox: dict[int, int] = {}  # sandbox_id -> pid
        self.inbox = bytearray()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def send(self, message: protocol.Message) -> None:
        data = protocol.frame(message)
        while data:
            written = os.write(1, data)
            data = data[written:]

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host decides when we stop
        self.send(protocol.ZygoteReady(pid=os.getpid(), unavailable=self._unavailable()))
        while True:
            readable, _, _ = select.select([0, self.wake_r], [], [])
            if self.wake_r in readable:
                self._drain_wakeups()
                self.reap()
            if 0 in readable:
                chunk = os.read(0, 65536)
                if not chunk:
                    self.shutdown()
                    return
                self.inbox += chunk
                for body in protocol.split_frames(self.inbox):
                    self.handle(protocol.to_zygote.decode(body))

    def _unavailable(self) -> list[tuple[str, str]]:
        return [tuple(pair) for pair in self.hardening.unavailable]  # type: ignore[misc]

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def handle(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.ForkRequest):
            self.fork(message)
        elif isinstance(message, protocol.Kill):
            pid = self.by_sandbox.get(message.sandbox_id)
            if pid is not None:  # only a pid we have not reaped: never a recycled one
                os.kill(pid, signal.SIGKILL)

    def fork(self, request: protocol.ForkRequest) -> None:
        pid = os.fork()
        if pid == 0:
            child.main(
                request,
                self.hardening,
                self.prepared,
                warmup=self.warmup,
                close_fds=(self.wake_r, self.wake_w),
            )
            os._exit(70)  # child.main never returns; this is a belt for the braces
        self.children[pid] = request.sandbox_id
        self.by_sandbox[request.sandbox_id] = pid
        self.send(protocol.Forked(sandbox_id=request.sandbox_id, pid=pid))

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            sandbox_id = self.children.pop(pid, -1)
            self.by_sandbox.pop(sandbox_id, None)
            self.send(
                protocol.Exited(
                    sandbox_id=sandbox_id,
                    pid=pid,
                    status=status,
                    description=describe_status(status),
                )
            )

    def shutdown(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()
        self.hardening.close()


def _read_frame() -> bytes:
    buffer = bytearray()
    while True:
        frames = protocol.split_frames(buffer)
        if frames:
            return frames[0]
        chunk = os.read(0, 65536)
        if not chunk:
            sys.exit(0)
        buffer += chunk


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the host died before we set the signal
        sys.exit(0)
    init = msgspec.json.decode(_read_frame(), type=protocol.ZygoteInit)
    # Run what every sandbox runs, here, so that its first-run writes are not paid per fork.
    prewarm.rehearse(init.policy, init.warmup)
    zygote = Zygote(init.policy, init.warmup)
    # Started, the zygote needs no environment, and a sandbox gets none: emptied once here, each
    # sandbox's own clearing (runtime.sandbox.child) finds nothing left to do.
    os.environ.clear()
    # Everything a sandbox needs is imported and warm; freeze it so that forked children share
    # these pages instead of copying them when the collector walks them.
    gc.collect()
    gc.freeze()
    zygote.serve()


if __name__ == "__main__":
    main()
