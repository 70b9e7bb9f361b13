"""The OS layer of a sandbox: rlimits, prctl flags, the uid drop, Landlock and seccomp.

Runs in two processes, on the one thread that forks or the one that will run tenant code:

* the zygote calls `PreparedHardening.prepare(limits)` once before any fork. It resolves libc,
  computes every rlimit, assembles the seccomp program (`sandbox_policy.seccomp`) and creates the
  Landlock ruleset fd (`sandbox_policy.landlock`), so that a sandbox only installs. It owns the
  ruleset fd and closes it with `close()`.
* each forked sandbox calls `apply_process_limits()` first thing after fork (rlimits, parent-death
  signal, not dumpable, no_new_privs), then `apply_confinement()` as its last step before tenant
  code (uid drop, RLIMIT_NPROC, Landlock, seccomp, in that order: each needs the previous).

Failure: nothing here raises for a layer the machine cannot provide. `prepare` records why a layer
is missing (`PreparedHardening.unavailable`); the apply methods record what the kernel refused, and
`apply_confinement` returns a `HardeningReport` of what is in force and what is missing, for the
caller to log or to refuse to serve. The one exception is a sandbox whose zygote died before the
parent-death signal was armed: it exits at once (status 1), since nothing would ever reap it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynworkers.sandbox_policy.landlock import LandlockRuleset
from dynworkers.sandbox_policy.policy import OsLimits
from dynworkers.sandbox_policy.seccomp import SeccompFilter

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39

#: Seconds of CPU between the soft RLIMIT_CPU (SIGXCPU, catchable) and the hard one (SIGKILL).
CPU_GRACE_SECONDS = 2

#: Layer names, in the order they are applied.
LAYERS = (
    "rlimits",
    "pdeathsig",
    "not_dumpable",
    "no_new_privs",
    "uid_drop",
    "nproc",
    "landlock",
    "seccomp",
)
_PROCESS_LAYERS = LAYERS[:4]


@dataclass(frozen=True)
class HardeningReport:
    """What one sandbox has in force, and why each missing layer is missing.

    A layer the limits did not ask for (seccomp=False, or a uid drop when not running as root)
    appears in neither tuple.
    """

    #: Layer names in force, in the order they were applied (names from `LAYERS`).
    active: tuple[str, ...]
    #: (layer, reason) for each layer asked for but not in force.
    unavailable: tuple[tuple[str, str], ...]


class _Kernel:
    """prctl and raw system calls through libc, raising OSError like the os module does."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = libc.prctl
        self._prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        self._prctl.restype = ctypes.c_int
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        result: int = self._prctl(option, arg2, arg3, 0, 0)
        if result == -1:
            raise _errno_error(f"prctl({option})")
        return result

    def syscall(self, number: int, *args: int) -> int:
        result: int = self._syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
        if result == -1:
            raise _errno_error(f"syscall({number})")
        return result


def _errno_error(call: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{call}: {os.strerror(code)}")


def _reason(exc: Exception) -> str:
    """One line for the report: the message, then the errno name when there is one."""
    if isinstance(exc, OSError) and exc.strerror:
        name = errno.errorcode.get(exc.errno or 0)
        return f"{exc.strerror} [{name}]" if name else exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _rlimits(limits: OsLimits) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) to set, never above the hard limit the zygote already has."""
    wanted = [(resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_FSIZE, *(limits.file_size,) * 2)]
    if limits.memory_bytes:  # 0 leaves the address space as it is
        wanted.append((resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes))
    if limits.cpu_seconds:  # 0 leaves CPU time as it is (the kernel would read 0 as 1 second)
        cpu = limits.cpu_seconds
        wanted.append((resource.RLIMIT_CPU, cpu, cpu + CPU_GRACE_SECONDS))
    if limits.open_files:  # 0 leaves the fd table as it is
        wanted.append((resource.RLIMIT_NOFILE, limits.open_files, limits.open_files))
    return [_clamp(res, soft, hard) for res, soft, hard in wanted]


def _clamp(res: int, soft: int, hard: int) -> tuple[int, int, int]:
    current_hard = resource.getrlimit(res)[1]
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    return res, min(soft, hard), hard


class PreparedHardening:
    """Everything a sandbox needs to harden itself, built once in the zygote and inherited by fork.

    Build with `prepare`; the constructor only stores what `prepare` found.
    """

    def __init__(
        self,
        limits: OsLimits,
        kernel: _Kernel | None,
        seccomp: SeccompFilter | None,
        ruleset: LandlockRuleset | None,
        missing: list[tuple[str, str]],
    ) -> None:
        self.limits = limits
        self._kernel = kernel
        self._seccomp = seccomp
        self._ruleset = ruleset
        self._missing = tuple(missing)
        self._rlimits = _rlimits(limits)
        self._parent_pid = os.getpid()
        # Filled in the child by apply_process_limits; a fork copies them empty.
        self._active: list[str] = []
        self._refused: list[tuple[str, str]] = []
        self._process_limits_applied = False

    @classmethod
    def prepare(cls, limits: OsLimits, readable: Sequence[str] | None = None) -> PreparedHardening:
        """In the zygote, before any fork: find out what this machine offers and build it.

        `readable`: the only paths Landlock lets a sandbox read (`landlock.readable_paths()`);
        None leaves reading unrestricted (writes are denied either way)."""
        missing: list[tuple[str, str]] = []
        try:
            kernel: _Kernel | None = _Kernel()
        except (OSError, AttributeError) as exc:  # no libc, or one without prctl/syscall
            kernel = None
            for layer in ("pdeathsig", "not_dumpable", "no_new_privs", "landlock", "seccomp"):
                missing.append((layer, f"libc unavailable: {exc}"))
        seccomp: SeccompFilter | None = None
        if limits.seccomp and kernel is not None:
            try:
                seccomp = SeccompFilter.prepare(os.uname().machine)
            except OSError as exc:
                missing.append(("seccomp", _reason(exc)))
        ruleset: LandlockRuleset | None = None
        if limits.landlock and kernel is not None:
            try:
                ruleset = LandlockRuleset.create(kernel.syscall, readable)
            except OSError as exc:
                missing.append(("landlock", _reason(exc)))
        return cls(limits, kernel, seccomp, ruleset, missing)

    @property
    def unavailable(self) -> tuple[tuple[str, str], ...]:
        """(layer, reason) for each layer asked for that this machine cannot provide."""
        return self._missing

    @property
    def inherited_fds(self) -> tuple[int, ...]:
        """Fds a forked sandbox must keep open until `apply_confinement` (the Landlock ruleset)."""
        return (self._ruleset.fd,) if self._ruleset is not None and self._ruleset.fd >= 0 else ()

    @property
    def landlock_abi(self) -> int:
        """The kernel's Landlock ABI version, 0 when Landlock is not used."""
        return self._ruleset.abi if self._ruleset is not None else 0

    # in the sandbox ----------------------------------------------------------------------------

    def apply_process_limits(self) -> None:
        """In the child, first thing after fork: rlimits, parent-death signal, dumpable, NNP."""
        self._process_limits_applied = True
        self._layer("rlimits", self._set_rlimits)
        if self._kernel is None:
            return  # prepare reported the prctl layers missing
        kernel = self._kernel
        self._layer("pdeathsig", lambda: kernel.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL))
        if os.getppid() != self._parent_pid:
            os._exit(1)  # the zygote died before the signal was armed: nobody would reap us
        self._layer("not_dumpable", lambda: kernel.prctl(_PR_SET_DUMPABLE, 0))
        self._layer("no_new_privs", lambda: kernel.prctl(_PR_SET_NO_NEW_PRIVS, 1))

    def apply_confinement(self) -> HardeningReport:
        """In the child, last step before tenant code: uid drop, NPROC, Landlock, seccomp."""
        if not self._process_limits_applied:
            for layer in _PROCESS_LAYERS:
                self._refused.append((layer, "apply_process_limits() was not called"))
        limits = self.limits
        if limits.drop_privileges and os.geteuid() == 0:
            self._layer("uid_drop", self._drop_privileges)
            rearm = self._kernel
            if rearm is not None:
                # The kernel clears the parent-death signal (and dumpable) when credentials
                # change: arm both again, or a sandbox would outlive a killed zygote.
                rearm.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
                rearm.prctl(_PR_SET_DUMPABLE, 0)
                if os.getppid() != self._parent_pid:
                    os._exit(1)  # the zygote died while the signal was unarmed
        if os.geteuid() != 0:
            self._layer("nproc", self._set_nproc)
        else:
            self._refused.append(("nproc", "still root: the kernel ignores RLIMIT_NPROC for root"))
        kernel, ruleset, seccomp = self._kernel, self._ruleset, self._seccomp
        if kernel is not None and (ruleset is not None or seccomp is not None):
            self._ensure_no_new_privs(kernel)
        if kernel is not None and ruleset is not None:
            self._layer("landlock", lambda: ruleset.restrict_self(kernel.syscall))
        if kernel is not None and seccomp is not None:
            self._layer("seccomp", lambda: seccomp.install(kernel.syscall, kernel.prctl))
        return HardeningReport(tuple(self._active), self._missing + tuple(self._refused))

    def close(self) -> None:
        """In the zygote, when it stops forking: close the Landlock ruleset fd."""
        if self._ruleset is not None:
            self._ruleset.close()

    # steps -------------------------------------------------------------------------------------

    def _layer(self, name: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # a refused layer is reported, never raised into the sandbox
            self._refused.append((name, _reason(exc)))
        else:
            self._active.append(name)

    def _set_rlimits(self) -> None:
        failed = []
        for res, soft, hard in self._rlimits:
            try:
                resource.setrlimit(res, (soft, hard))
            except (OSError, ValueError) as exc:
                failed.append(f"resource {res} to ({soft}, {hard}): {exc}")
        if failed:
            raise OSError(errno.EPERM, "could not set " + "; ".join(failed))

    def _drop_privileges(self) -> None:
        uid, gid = self.limits.uid, self.limits.gid
        if uid == 0 or gid == 0:
            raise PermissionError(errno.EINVAL, f"OsLimits uid={uid} gid={gid}: 0 drops nothing")
        os.setgroups([])
        os.setresgid(gid, gid, gid)  # groups first: once the uid is gone, so is the right to
        os.setresuid(uid, uid, uid)  # glibc applies both to every thread of the process
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
            raise PermissionError(errno.EPERM, f"still uid {os.getresuid()} gid {os.getresgid()}")
        # A change of credentials resets dumpable to fs.suid_dumpable: clear it again.
        if self._kernel is not None:
            self._kernel.prctl(_PR_SET_DUMPABLE, 0)

    def _set_nproc(self) -> None:
        _, soft, hard = _clamp(resource.RLIMIT_NPROC, self.limits.processes, self.limits.processes)
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))

    @staticmethod
    def _ensure_no_new_privs(kernel: _Kernel) -> None:
        # Landlock and seccomp both need it; set here too if apply_process_limits was skipped.
        # A failure shows up as those layers' own EPERM.
        try:
            if not kernel.prctl(_PR_GET_NO_NEW_PRIVS):
                kernel.prctl(_PR_SET_NO_NEW_PRIVS, 1)
        except OSError:
            pass
