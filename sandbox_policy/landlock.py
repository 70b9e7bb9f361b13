"""The Landlock ruleset: no writes anywhere, and reads only of what a sandbox needs.

Runs in two processes. In the zygote, `LandlockRuleset.create` asks the kernel for its Landlock
ABI and creates one ruleset fd that handles every write-like right the ABI knows (write,
truncate, make, remove, refer, execute) and grants none of them anywhere. Given `readable` paths
(the zygote passes `readable_paths()`), it handles reading and listing too, and grants them
beneath those paths only: the interpreter, its standard library without site-packages, the
directories of the modules the zygote imported, the shared objects mapped into it, and the time
zone data. Everything else (the state directory, the host's working directory, /home, /root,
/proc, /etc) cannot be opened. The fd is close-on-exec and every fork inherits it. In the sandbox
child, `restrict_self` enforces it on the calling thread and closes the child's copy; the zygote
closes its own with `close`.

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
import site
import stat
import sys
import sysconfig
from collections.abc import Callable, Iterable

#: Calls a system call by number with integer arguments; raises OSError on failure.
Syscall = Callable[..., int]

# The same numbers on every architecture (added after the syscall tables were unified).
_CREATE_RULESET = 444
_ADD_RULE = 445
_RESTRICT_SELF = 446
_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1

# linux/landlock.h: filesystem rights, with the ABI that introduced each.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2  # handled when readable paths are given
ACCESS_FS_READ_DIR = 1 << 3  # handled when readable paths are given
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


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


#: Read-only files and trees a Python sandbox may need besides its modules (time zones).
_SYSTEM_READABLE = ("/etc/localtime", "/usr/share/zoneinfo")


def readable_paths() -> list[str]:
    """What a sandbox forked from this process may read, as resolved paths.

    The interpreter; each entry of the standard library except site-packages (the package
    directories come from the modules actually imported); the directory of every module imported
    so far, or its file alone when it sits at the top of the standard library or of a
    site-packages; the shared objects mapped into this process; the time zone data. Call it in
    the zygote once everything a sandbox needs is imported.
    """
    found: set[str] = {os.path.realpath(sys.executable)}
    site_dirs = {os.path.realpath(p) for p in site.getsitepackages()}
    site_dirs.add(os.path.realpath(site.getusersitepackages()))
    roots = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    for root in roots:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            path = os.path.realpath(entry.path)
            if entry.name not in ("site-packages", "dist-packages") and path not in site_dirs:
                found.add(path)
    flat = roots | site_dirs
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str) and filename:
            path = os.path.realpath(filename)
            folder = os.path.dirname(path)
            found.add(path if folder in flat else folder)
        for folder in list(getattr(module, "__path__", None) or []):
            if isinstance(folder, str) and os.path.realpath(folder) not in flat:
                found.add(os.path.realpath(folder))
    found.update(_mapped_files())
    found.update(os.path.realpath(p) for p in _SYSTEM_READABLE)
    return sorted(p for p in found if os.path.exists(p))


def _mapped_files() -> set[str]:
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return set()
    return {
        os.path.realpath(fields[5])
        for fields in (line.split(maxsplit=5) for line in lines)
        if len(fields) == 6 and fields[5].startswith("/")
    }


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


def handled_rights(abi: int, restrict_reads: bool = False) -> tuple[int, int, int]:
    """(filesystem, network, scope) rights to deny at `abi`: every write-like one it knows, and
    reading and listing when `restrict_reads`."""
    fs = _WRITE_ABI1
    if restrict_reads:
        fs |= ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
    if abi >= 2:
        fs |= ACCESS_FS_REFER
    if abi >= 3:
        fs |= ACCESS_FS_TRUNCATE
    net = ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


class LandlockRuleset:
    """A ruleset fd: writes denied everywhere; reads denied outside `readable` when given."""

    def __init__(self, fd: int, abi: int) -> None:
        self.fd = fd
        self.abi = abi

    @classmethod
    def create(cls, syscall: Syscall, readable: Iterable[str] | None = None) -> LandlockRuleset:
        """`readable=None` leaves reading unrestricted; otherwise only those paths (and what is
        beneath them) can be read or listed. A path that does not exist is skipped."""
        abi = abi_version(syscall)
        fs, net, scoped = handled_rights(abi, restrict_reads=readable is not None)
        attr = _RulesetAttr(fs, net, scoped)
        # An older kernel rejects a struct larger than it knows (E2BIG): pass only its fields.
        size = 8 if abi < 4 else 16 if abi < 6 else ctypes.sizeof(attr)
        fd = syscall(_CREATE_RULESET, ctypes.addressof(attr), size, 0)
        ruleset = cls(fd, abi)
        try:
            for path in readable or ():
                ruleset._allow_read(syscall, path)
        except OSError:
            ruleset.close()
            raise
        return ruleset

    def _allow_read(self, syscall: Syscall, path: str) -> None:
        try:
            target = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # gone since it was listed: nothing to allow
        try:
            is_dir = stat.S_ISDIR(os.fstat(target).st_mode)
            rights = ACCESS_FS_READ_FILE | (ACCESS_FS_READ_DIR if is_dir else 0)
            rule = _PathBeneath(rights, target)
            try:
                syscall(_ADD_RULE, self.fd, _RULE_PATH_BENEATH, ctypes.addressof(rule), 0)
            except OSError as exc:
                raise OSError(exc.errno, f"landlock_add_rule {path}: {exc.strerror}") from exc
        finally:
            os.close(target)

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
