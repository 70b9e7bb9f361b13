"""The Landlock ruleset that makes the whole filesystem read-only for a sandbox.

Runs in two processes. In the zygote, `LandlockRuleset.create` asks the kernel for its Landlock
ABI and creates one ruleset fd that handles every write-like right the ABI knows (write,
truncate, make, remove, refer, execute) and grants none of them anywhere: there are no rules.
The fd is close-on-exec and every fork inherits it. In the sandbox child, `restrict_self` enforces
it on the calling thread and closes the child's copy; the zygote closes its own with `close`.

Beyond the filesystem, where the ABI has them, the ruleset also denies TCP bind and connect (ABI
4) and scopes signals to the sandbox itself (ABI 6): a sandbox cannot signal the zygote, the host,
or another sandbox that shares its uid. Reading, listing and already-open fds (the ZeroMQ channel)
are untouched.

Landlock at ABI 7 restricts the calling thread only: threads started before `restrict_self` (the
ZeroMQ I/O threads) stay unconfined by it; seccomp, installed with TSYNC, covers them.

Failure: both methods raise `OSError` naming the reason (no Landlock in this kernel, the fd was
closed after fork, no_new_privs missing). The caller turns it into a reported, missing layer.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

#: Calls a system call by number with integer arguments; raises OSError on failure.
Syscall = Callable[..., int]

# The same numbers on every architecture (added after the syscall tables were unified).
_CREATE_RULESET = 444
_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1

# linux/landlock.h: filesystem rights, with the ABI that introduced each.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2  # not handled: reading stays allowed
ACCESS_FS_READ_DIR = 1 << 3  # not handled: listing stays allowed
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_NET_BIND_TCP = 1 << 0  # ABI 4
ACCESS_NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_SIGNAL = 1 << 1  # ABI 6

_WRITE_ABI1 = (
    ACCESS_FS_EXECUTE
    | ACCESS_FS_WRITE_FILE
    | ACCESS_FS_REMOVE_DIR
    | ACCESS_FS_REMOVE_FILE
    | ACCESS_FS_MAKE_CHAR
    | ACCESS_FS_MAKE_DIR
    | ACCESS_FS_MAKE_REG
    | ACCESS_FS_MAKE_SOCK
    | ACCESS_FS_MAKE_FIFO
    | ACCESS_FS_MAKE_BLOCK
    | ACCESS_FS_MAKE_SYM
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    ]


def abi_version(syscall: Syscall) -> int:
    """The kernel's Landlock ABI; OSError when the kernel has none or it is disabled."""
    try:
        return syscall(_CREATE_RULESET, 0, 0, _CREATE_RULESET_VERSION)
    except OSError as exc:
        why = {
            errno.ENOSYS: "this kernel has no Landlock (before 5.13)",
            errno.EOPNOTSUPP: "Landlock is built in but disabled (add 'landlock' to lsm=)",
        }.get(exc.errno or 0, exc.strerror)
        raise OSError(exc.errno, f"landlock_create_ruleset: {why}") from exc


def handled_rights(abi: int) -> tuple[int, int, int]:
    """(filesystem, network, scope) rights to deny at `abi`: every write-like one it knows."""
    fs = _WRITE_ABI1
    if abi >= 2:
        fs |= ACCESS_FS_REFER
    if abi >= 3:
        fs |= ACCESS_FS_TRUNCATE
    net = ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


class LandlockRuleset:
    """A ruleset fd with no rules: everything it handles is denied everywhere."""

    def __init__(self, fd: int, abi: int) -> None:
        self.fd = fd
        self.abi = abi

    @classmethod
    def create(cls, syscall: Syscall) -> LandlockRuleset:
        abi = abi_version(syscall)
        fs, net, scoped = handled_rights(abi)
        attr = _RulesetAttr(fs, net, scoped)
        # An older kernel rejects a struct larger than it knows (E2BIG): pass only its fields.
        size = 8 if abi < 4 else 16 if abi < 6 else ctypes.sizeof(attr)
        fd = syscall(_CREATE_RULESET, ctypes.addressof(attr), size, 0)
        return cls(fd, abi)

    def restrict_self(self, syscall: Syscall) -> None:
        """Enforce on this thread (needs no_new_privs), then close this process's copy."""
        try:
            syscall(_RESTRICT_SELF, self.fd, 0)
        except OSError as exc:
            why = {
                errno.EBADF: f"ruleset fd {self.fd} was closed after fork; keep "
                "PreparedHardening.inherited_fds open",
                errno.EBADFD: f"fd {self.fd} is no longer the ruleset (closed and reused after "
                "fork); keep PreparedHardening.inherited_fds open",
                errno.EPERM: "no_new_privs is not set",
                errno.E2BIG: "the process already has the maximum of 16 Landlock layers",
            }.get(exc.errno or 0, exc.strerror)
            raise OSError(exc.errno, f"landlock_restrict_self: {why}") from exc
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
