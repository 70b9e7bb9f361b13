"""The seccomp filter a sandbox installs on itself: classic BPF built by hand, no libseccomp.

Runs in two processes. In the zygote, `SeccompFilter.prepare` picks the syscall table for the
machine and assembles the program once, into a ctypes `sock_fprog` that every fork inherits. In
the sandbox child, `SeccompFilter.install` is one system call that hands that program to the
kernel for every thread of the process (SECCOMP_FILTER_FLAG_TSYNC: the ZeroMQ I/O threads exist
by then).

The filter kills the whole process (SIGSYS) on what would let tenant code leave its box: a socket
of any family but AF_UNIX, execve and execveat, fork and vfork, clone without CLONE_THREAD (a new
process rather than a thread), ptrace, and any foreign system-call ABI (i386 `int 0x80`, x32
numbers). clone3 answers ENOSYS, because its flags sit behind a pointer BPF cannot read and glibc
then falls back to clone, which the filter can judge. io_uring_setup answers EPERM (a ring can
open sockets without the socket system call). Everything else is allowed: this is a fence around
escapes, not an allowlist; RLIMIT_NPROC, the uid drop and Landlock cover the rest.

Failure: both methods raise `OSError`, whose message names the reason (an unsupported machine at
prepare; the kernel's refusal at install). The caller turns it into a reported, missing layer.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

#: Calls a system call by number with integer arguments; raises OSError on failure.
Syscall = Callable[..., int]

# Classic BPF opcodes (linux/filter.h), only the four shapes the program uses.
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word at offset k of seccomp_data
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: A == k ? jt : jf
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K: A >= k ? jt : jf (unsigned)
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K: A & k ? jt : jf
_RET_K = 0x06  # BPF_RET | BPF_K: return k

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }.
_NR = 0
_ARCH = 4
_ARG0_LOW = 16  # low 32 bits of args[0] on a little-endian machine

# Filter return values (linux/seccomp.h).
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000  # | errno in the low 16 bits
_ALLOW = 0x7FFF0000

_X32_SYSCALL_BIT = 0x40000000
_AF_UNIX = 1
_CLONE_THREAD = 0x00010000

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1


@dataclass(frozen=True)
class Arch:
    """The system-call table of one machine, as the filter needs it."""

    audit_arch: int  # AUDIT_ARCH_* that the kernel puts in seccomp_data.arch
    seccomp: int  # number of the seccomp system call itself
    socket: int
    execve: int
    execveat: int
    clone: int
    clone3: int
    io_uring_setup: int
    ptrace: int
    fork: int | None  # None where the ABI has no fork/vfork (aarch64: clone does it all)
    vfork: int | None
    x32_bit: bool  # whether numbers with the x32 bit would reach another ABI
    #: answered EPERM: namespaces (unshare, setns), bpf, keyrings (add_key, request_key,
    #: keyctl), userfaultfd, perf_event_open, mount, and reading or writing another process's
    #: memory (process_vm_readv/writev): kernel surface a tenant never needs
    denied: tuple[int, ...] = ()


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        audit_arch=0xC000003E,
        seccomp=317,
        socket=41,
        execve=59,
        execveat=322,
        clone=56,
        clone3=435,
        io_uring_setup=425,
        ptrace=101,
        fork=57,
        vfork=58,
        x32_bit=True,
        denied=(272, 308, 321, 248, 249, 250, 323, 298, 165, 310, 311),
    ),
    "aarch64": Arch(
        audit_arch=0xC00000B7,
        seccomp=277,
        socket=198,
        execve=221,
        execveat=281,
        clone=220,
        clone3=435,
        io_uring_setup=425,
        ptrace=117,
        fork=None,
        vfork=None,
        x32_bit=False,
        denied=(97, 268, 280, 217, 218, 219, 282, 241, 40, 270, 271),
    ),
}


# An instruction before assembly: jump targets are label names, resolved by `assemble`.
_Insn = tuple[int, str | int, str | int, int]


def _label(name: str) -> str:
    """A jump target: marks the position of the next instruction."""
    return name


def program(arch: Arch) -> list[_Insn | str]:
    """The filter for `arch`, one instruction a line; "next" means fall through."""
    kill, allow = "kill", "allow"
    body: list[_Insn | str] = [
        (_LD_W_ABS, 0, 0, _ARCH),  # A = arch of the calling ABI
        (_JEQ_K, "next", kill, arch.audit_arch),  # a foreign ABI (i386 on x86_64) -> kill
        (_LD_W_ABS, 0, 0, _NR),  # A = system-call number
    ]
    if arch.x32_bit:
        body.append((_JGE_K, kill, "next", _X32_SYSCALL_BIT))  # x32 numbers -> kill
    body += [
        (_JEQ_K, "socket", "next", arch.socket),  # socket: judge the family below
        (_JEQ_K, "clone", "next", arch.clone),  # clone: judge the flags below
        (_JEQ_K, kill, "next", arch.execve),  # execve -> kill
        (_JEQ_K, kill, "next", arch.execveat),  # execveat -> kill
        (_JEQ_K, kill, "next", arch.ptrace),  # ptrace -> kill
        (_JEQ_K, "enosys", "next", arch.clone3),  # clone3 -> ENOSYS, glibc retries with clone
        (_JEQ_K, "eperm", "next", arch.io_uring_setup),  # io_uring_setup -> EPERM
    ]
    if arch.fork is not None and arch.vfork is not None:
        body += [
            (_JEQ_K, kill, "next", arch.fork),  # fork -> kill
            (_JEQ_K, kill, "next", arch.vfork),  # vfork -> kill
        ]
    body += [(_JEQ_K, "eperm", "next", nr) for nr in arch.denied]  # kernel surface -> EPERM
    body += [
        (_RET_K, 0, 0, _ALLOW),  # any other system call -> allow
        _label("socket"),
        (_LD_W_ABS, 0, 0, _ARG0_LOW),  # A = domain (an int: the kernel ignores the high half)
        (_JEQ_K, allow, kill, _AF_UNIX),  # AF_UNIX -> allow, any other family -> kill
        _label("clone"),
        (_LD_W_ABS, 0, 0, _ARG0_LOW),  # A = clone flags (the kernel reads only the low half)
        (_JSET_K, allow, kill, _CLONE_THREAD),  # a thread -> allow, a new process -> kill
        _label("enosys"),
        (_RET_K, 0, 0, _ERRNO | errno.ENOSYS),  # fail with ENOSYS
        _label("eperm"),
        (_RET_K, 0, 0, _ERRNO | errno.EPERM),  # fail with EPERM
        _label(allow),
        (_RET_K, 0, 0, _ALLOW),  # allow
        _label(kill),
        (_RET_K, 0, 0, _KILL_PROCESS),  # kill the whole process with SIGSYS
    ]
    return body


def assemble(source: list[_Insn | str]) -> bytes:
    """Resolve labels to relative jumps and pack `struct sock_filter` records."""
    labels: dict[str, int] = {}
    insns: list[_Insn] = []
    for item in source:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)

    def offset(target: str | int, here: int) -> int:
        if isinstance(target, int):
            return target
        if target == "next":
            return 0
        distance = labels[target] - here - 1
        if not 0 <= distance <= 255:
            raise ValueError(f"BPF jump to {target!r} spans {distance} instructions")
        return distance

    return b"".join(
        struct.pack("=HBBI", code, offset(jt, i), offset(jf, i), k)
        for i, (code, jt, jf, k) in enumerate(insns)
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompFilter:
    """An assembled filter, ready to install with one system call."""

    def __init__(self, arch: Arch, code: bytes) -> None:
        self.arch = arch
        self.code = code
        self._buffer = ctypes.create_string_buffer(code, len(code))
        self._fprog = _SockFprog(len(code) // 8, ctypes.addressof(self._buffer))

    @classmethod
    def prepare(cls, machine: str) -> SeccompFilter:
        """Build the filter for `machine` (``os.uname().machine``)."""
        arch = ARCHES.get(machine)
        if arch is None:
            known = ", ".join(ARCHES)
            raise OSError(errno.ENOSYS, f"no seccomp syscall table for {machine!r} (have {known})")
        if ctypes.sizeof(ctypes.c_void_p) != 8 or sys.byteorder != "little":
            raise OSError(
                errno.ENOSYS,
                f"seccomp filter expects a 64-bit little-endian interpreter on {machine}",
            )
        return cls(arch, assemble(program(arch)))

    def install(self, syscall: Syscall, prctl: Syscall) -> None:
        """Install on every thread of this process; needs no_new_privs (or CAP_SYS_ADMIN)."""
        address = ctypes.addressof(self._fprog)
        try:
            tid = syscall(
                self.arch.seccomp, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, address
            )
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                message = f"seccomp(SET_MODE_FILTER) refused: {exc.strerror}"
                raise OSError(exc.errno, message) from exc
            prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, address)  # old kernel: this thread only
            return
        if tid:
            raise OSError(errno.EBUSY, f"thread {tid} could not take the seccomp filter (TSYNC)")
