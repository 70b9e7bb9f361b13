"""One owner per state directory, and no ipc run directory left behind by a dead owner.

Host side, called from `Supervisor.start` and `Supervisor.close` on the event loop's thread (the
file operations are few and small). It owns two kinds of lock, both `fcntl.flock` on a file that
stays open for the owner's life, so the kernel releases them when the process dies however it
dies (kill -9 included):

- `<state_dir>/owner.lock`: the state directory's owner, its pid written in the file. A second
  owner, in another process or in this one (a second `Supervisor` on the same directory: flock
  locks belong to the open file, not the process), gets `StateDirInUse` naming the pid.
- `<tmp>/dw-*/owner`: each ipc run directory's owner. A start removes every run directory whose
  owner lock it can take: its owner is gone (a process killed before `close` ran).

Before the lock is taken the directory is checked: created if missing, writable, with room for a
write (`StateDirUnusable` says which and what to do), so that a read-only or full disk stops the
start before anything else runs, not after.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

from dynworkers.runtime.errors import StateDirInUse, StateDirUnusable

log = logging.getLogger("dynworkers.state")

LOCK_NAME = "owner.lock"
RUN_PREFIX = "dw-"
RUN_OWNER = "owner"
#: bytes written (and removed) to prove the directory takes a write before anything starts
PROBE_BYTES = 64 * 1024


def _unusable(path: Path, exc: OSError) -> StateDirUnusable:
    if exc.errno == errno.ENOSPC:
        advice = "free some space on its disk, or choose another with --state-dir"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "make it writable for this user, or choose another with --state-dir"
    else:
        advice = "check its disk, or choose another with --state-dir"
    reason = exc.strerror or str(exc)
    return StateDirUnusable(f"state directory {str(path)!r} is not usable ({reason}): {advice}")


def probe(path: Path) -> None:
    """Write, flush and remove a small file in `path`; OSError if the disk refuses."""
    target = path / f".probe-{os.getpid()}"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            target.unlink()


class StateLock:
    """The owner lock of one state directory, held from `acquire` to `release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _unusable(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirInUse(
                f"state directory {str(self.path)!r} is in use by process {owner}: stop it "
                "first, or give this one another state directory"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            probe(self.path)
        except OSError as exc:
            os.close(fd)  # releases the lock
            raise _unusable(self.path, exc) from None
        self._fd = fd

    def release(self) -> None:
        """Give the directory up; the file stays (removing it would race the next owner)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


class RunDir:
    """A private ipc directory (ipc paths are limited to ~107 bytes: a short one under /tmp),
    with an owner lock that tells a later start whether its creator is still alive."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix=RUN_PREFIX)
        # Locked under another name, then renamed: whoever opens `owner` finds it locked.
        partial = os.path.join(self.path, f".{RUN_OWNER}")
        self._fd: int | None = os.open(partial, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        os.rename(partial, os.path.join(self.path, RUN_OWNER))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove_stale_run_dirs(root: str | None = None) -> list[str]:
    """Remove the run directories under `root` (the temp directory) whose owner is gone; the
    removed paths. A directory without an owner file is left alone: it is not one of ours, or
    its creator has not written the file yet."""
    root = root or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(RUN_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != uid:
                continue
            fd = os.open(os.path.join(entry.path, RUN_OWNER), os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its owner is alive
        finally:
            os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    if removed:
        log.info("removed %d ipc run directory(ies) left by a process that died", len(removed))
    return removed
