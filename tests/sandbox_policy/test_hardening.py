"""The OS hardening layer holds against real attacks in real forked processes.

The pytest process has threads and is never forked. Each test starts a fresh interpreter running
`HARNESS`, which plays the zygote: it prepares, forks one sandbox, and the sandbox applies both
steps and then runs one attack program. The sandbox streams what it sees through a pipe (one JSON
object a line) so that notes made before a fatal system call survive it; the harness reaps the
sandbox, decodes its wait status and prints one JSON object for the test to assert on.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from dynworkers.sandbox_policy.hardening import LAYERS, PreparedHardening
from dynworkers.sandbox_policy.policy import MiB, OsLimits
from dynworkers.sandbox_policy.seccomp import ARCHES, SeccompFilter, assemble, program

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="the uid drop and NPROC need root")

# argv: limits expression, attack source. Prints {"signal", "exit", "notes"}.
HARNESS = r"""
import ctypes, json, os, resource, signal, socket, sys, threading, time
from dynworkers.sandbox_policy.hardening import PreparedHardening
from dynworkers.sandbox_policy.policy import MiB, OsLimits

limits = eval(sys.argv[1], {"OsLimits": OsLimits, "MiB": MiB})
hardening = PreparedHardening.prepare(limits)
read_fd, write_fd = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read_fd)

    def note(key, value):
        os.write(write_fd, json.dumps({key: value}).encode() + b"\n")

    status = 0
    try:
        hardening.apply_process_limits()
        report = hardening.apply_confinement()
        note("active", list(report.active))
        note("unavailable", [list(pair) for pair in report.unavailable])
        exec(sys.argv[2], {"note": note, "ctypes": ctypes, "os": os, "resource": resource,
                           "socket": socket, "threading": threading})
    except BaseException as exc:
        note("error", f"{type(exc).__name__}: {exc}")
        status = 3
    os._exit(status)
os.close(write_fd)
deadline = time.monotonic() + 20
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        break
    time.sleep(0.002)
chunks = []
while chunk := os.read(read_fd, 65536):
    chunks.append(chunk)
hardening.close()
notes = {}
for line in b"".join(chunks).splitlines():
    notes.update(json.loads(line))
print(json.dumps({
    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
    "prepare_unavailable": [list(pair) for pair in hardening.unavailable],
    "notes": notes,
}))
"""

# --- attack programs: each runs in a confined sandbox and reports through note() ---------------

INET_SOCKET = """
socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
note("unix_socket", "ok")
socket.socket(socket.AF_INET, socket.SOCK_STREAM)
note("inet_socket", "ok")
"""

EXECV = """
note("before", "ok")
os.execv("/bin/true", ["true"])
"""

FORK = """
note("before", "ok")
os.fork()
note("forked", "ok")
"""

SUBPROCESS = """
import subprocess
note("before", "ok")
subprocess.run(["/bin/true"])
"""

PTRACE = """
libc = ctypes.CDLL(None, use_errno=True)
note("before", "ok")
libc.syscall(101, 0, 0, 0, 0)  # ptrace(PTRACE_TRACEME)
"""

X32_GETPID = """
libc = ctypes.CDLL(None, use_errno=True)
note("before", "ok")
libc.syscall(0x40000000 + 39)  # getpid through the x32 ABI
"""

CLONE3_AND_IO_URING = """
libc = ctypes.CDLL(None, use_errno=True)
note("clone3", [libc.syscall(435, 0, 0), ctypes.get_errno()])
params = ctypes.create_string_buffer(120)
note("io_uring_setup", [libc.syscall(425, 8, params), ctypes.get_errno()])
"""

KERNEL_SURFACE = """
libc = ctypes.CDLL(None, use_errno=True)
note("unshare", [libc.syscall(272, 0x10000000), ctypes.get_errno()])  # CLONE_NEWUSER
note("bpf", [libc.syscall(321, 0, 0, 0), ctypes.get_errno()])
note("userfaultfd", [libc.syscall(323, 0), ctypes.get_errno()])
"""

START_THREAD = """
seen = []
thread = threading.Thread(target=lambda: seen.append(threading.get_ident()))
try:
    thread.start()
    thread.join()
    note("thread", "started" if seen else "did not run")
except RuntimeError as exc:
    note("thread", f"RuntimeError: {exc}")
"""

FILESYSTEM = """
import sys
prefix = sys.argv[3]  # a path prefix: a directory and "/", or a unique name start under /tmp


def create_and_write():
    with open(prefix + "new.txt", "wb", buffering=0) as handle:
        handle.write(b"x")


note("read_hostname", len(open("/etc/hostname").read()))
for name, attempt in [
    ("create", create_and_write),
    ("append", lambda: open(prefix + "existing.txt", "a")),
    ("unlink", lambda: os.unlink(prefix + "existing.txt")),
    ("mkdir", lambda: os.mkdir(prefix + "dir")),
]:
    try:
        attempt()
        note(name, "ok")
    except OSError as exc:
        note(name, exc.errno)
"""

WRITE_BYTES = """
import sys
with open(os.path.join(sys.argv[3], "new.txt"), "wb", buffering=0) as handle:
    try:
        handle.write(b"x")
        note("write", "ok")
    except OSError as exc:
        note("write", exc.errno)
"""

ALLOCATE_GIB = """
try:
    block = bytearray(1 << 30)
    note("gib", "ok")
except MemoryError:
    note("gib", "MemoryError")
note("small", len(bytearray(1 << 20)))
"""

IDENTITY = """
PR_GET_DUMPABLE = 3
libc = ctypes.CDLL(None, use_errno=True)
note("resuid", list(os.getresuid()))
note("resgid", list(os.getresgid()))
note("groups", os.getgroups())
note("dumpable", libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
note("no_new_privs", status["NoNewPrivs"].strip())
note("seccomp_mode", status["Seccomp"].strip())
"""

PROC_STATUS = """
for line in open("/proc/self/status").read().splitlines():
    key, value = line.split(":", 1)
    if key in ("Seccomp", "NoNewPrivs"):
        note(key, value.strip())
"""

RLIMITS = """
for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE"):
    note(name, list(resource.getrlimit(getattr(resource, name))))
"""


def run_sandbox(limits: str, attack: str, *extra: str) -> dict[str, Any]:
    """Run `attack` in a sandbox forked by a fresh interpreter; return the harness's verdict."""
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, limits, attack, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    verdict: dict[str, Any] = json.loads(done.stdout)
    return verdict


def skip_without(layer: str, verdict: dict[str, Any]) -> None:
    for name, reason in verdict["prepare_unavailable"]:
        if name == layer:
            pytest.skip(f"{layer} unavailable on this machine: {reason}")


# --- seccomp ----------------------------------------------------------------------------------


def test_inet_socket_kills_the_sandbox_while_unix_socket_works() -> None:
    verdict = run_sandbox("OsLimits()", INET_SOCKET)
    skip_without("seccomp", verdict)
    assert verdict["notes"]["unix_socket"] == "ok"
    assert "inet_socket" not in verdict["notes"]
    assert verdict["signal"] == signal.SIGSYS


@pytest.mark.parametrize(
    "attack", [EXECV, FORK, SUBPROCESS, PTRACE, X32_GETPID], ids=lambda a: a.split()[0]
)
def test_process_creation_exec_ptrace_and_x32_kill_the_sandbox(attack: str) -> None:
    # drop_privileges=False: as root RLIMIT_NPROC does not apply, so only seccomp stops fork.
    verdict = run_sandbox("OsLimits(drop_privileges=False)", attack)
    skip_without("seccomp", verdict)
    assert verdict["notes"]["before"] == "ok"
    assert "forked" not in verdict["notes"]
    assert verdict["signal"] == signal.SIGSYS


def test_clone3_answers_enosys_and_io_uring_setup_eperm() -> None:
    verdict = run_sandbox("OsLimits()", CLONE3_AND_IO_URING)
    skip_without("seccomp", verdict)
    assert verdict["notes"]["clone3"] == [-1, 38]  # ENOSYS: glibc falls back to clone
    assert verdict["notes"]["io_uring_setup"] == [-1, 1]  # EPERM
    assert verdict["exit"] == 0


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers are x86_64's")
def test_namespaces_bpf_and_userfaultfd_answer_eperm() -> None:
    verdict = run_sandbox("OsLimits(drop_privileges=False)", KERNEL_SURFACE)
    skip_without("seccomp", verdict)
    for call in ("unshare", "bpf", "userfaultfd"):
        assert verdict["notes"][call] == [-1, 1], call  # EPERM, even for root
    assert verdict["exit"] == 0


def test_threads_pass_seccomp_when_nproc_does_not_apply() -> None:
    # Still root: threads are clone(CLONE_THREAD), which the filter allows.
    verdict = run_sandbox("OsLimits(drop_privileges=False)", START_THREAD)
    assert verdict["notes"]["thread"] == "started"
    assert verdict["exit"] == 0


@needs_root
def test_threads_fail_with_eagain_once_privileges_are_dropped() -> None:
    # RLIMIT_NPROC=0 for an unprivileged uid: clone fails with EAGAIN, which Python reports as
    # RuntimeError("can't start new thread"). Nothing is killed; tenant code gets an exception.
    verdict = run_sandbox("OsLimits()", START_THREAD)
    assert verdict["notes"]["thread"] == "RuntimeError: can't start new thread"
    assert verdict["exit"] == 0


# --- Landlock and RLIMIT_FSIZE ----------------------------------------------------------------


@needs_root
def test_landlock_makes_the_filesystem_read_only_even_for_root(tmp_path: Path) -> None:
    # Still root, so file permissions would allow everything: only Landlock denies (EACCES).
    (tmp_path / "existing.txt").write_text("kept")
    verdict = run_sandbox("OsLimits(drop_privileges=False)", FILESYSTEM, f"{tmp_path}/")
    skip_without("landlock", verdict)
    notes = verdict["notes"]
    assert notes["read_hostname"] > 0
    assert {notes[k] for k in ("create", "append", "unlink", "mkdir")} == {13}  # EACCES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt"]
    assert verdict["exit"] == 0


@needs_root
def test_file_size_zero_stops_writes_without_landlock(tmp_path: Path) -> None:
    verdict = run_sandbox(
        "OsLimits(drop_privileges=False, landlock=False)", WRITE_BYTES, str(tmp_path)
    )
    assert verdict["notes"]["write"] == 27  # EFBIG: Python ignores SIGXFSZ
    assert (tmp_path / "new.txt").stat().st_size == 0
    assert verdict["exit"] == 0


def test_writing_under_tmp_fails_and_reading_etc_works() -> None:
    # With default limits: Landlock refuses the open; without Landlock, RLIMIT_FSIZE the write.
    prefix = f"/tmp/dynworkers-hardening-{os.getpid()}-{uuid.uuid4().hex}-"
    try:
        notes = run_sandbox("OsLimits()", FILESYSTEM, prefix)["notes"]
        assert notes["read_hostname"] > 0
        assert notes["create"] != "ok"
        assert notes["mkdir"] != "ok"
    finally:
        for leftover in (Path(prefix + "new.txt"), Path(prefix + "dir")):
            if leftover.is_dir():
                leftover.rmdir()
            elif leftover.exists():
                leftover.unlink()


# --- rlimits, identity, report ----------------------------------------------------------------


def test_address_space_limit_turns_a_gib_allocation_into_memory_error() -> None:
    verdict = run_sandbox("OsLimits(memory_bytes=256 * MiB)", ALLOCATE_GIB)
    assert verdict["notes"]["gib"] == "MemoryError"
    assert verdict["notes"]["small"] == 1 << 20
    assert verdict["exit"] == 0


def test_rlimits_are_set_with_cpu_hard_limit_above_soft() -> None:
    limits = "OsLimits(memory_bytes=300 * MiB, cpu_seconds=30, open_files=40, file_size=0)"
    notes = run_sandbox(limits, RLIMITS)["notes"]
    assert notes["RLIMIT_AS"] == [300 << 20, 300 << 20]
    assert notes["RLIMIT_CPU"] == [30, 32]
    assert notes["RLIMIT_NOFILE"] == [40, 40]
    assert notes["RLIMIT_FSIZE"] == [0, 0]
    assert notes["RLIMIT_CORE"] == [0, 0]


@needs_root
def test_root_drops_to_nobody_and_the_sandbox_is_not_dumpable() -> None:
    verdict = run_sandbox("OsLimits()", IDENTITY)
    notes = verdict["notes"]
    assert notes["resuid"] == [65534] * 3
    assert notes["resgid"] == [65534] * 3
    assert notes["groups"] == []
    assert notes["dumpable"] == 0
    assert notes["no_new_privs"] == "1"
    assert notes["seccomp_mode"] == "2"


@needs_root
def test_report_lists_every_layer_when_all_are_available() -> None:
    verdict = run_sandbox("OsLimits()", "")
    notes = verdict["notes"]
    missing = {name for name, _ in verdict["prepare_unavailable"]}
    assert notes["active"] == [layer for layer in LAYERS if layer not in missing]
    assert [name for name, _ in notes["unavailable"]] == sorted(missing, key=LAYERS.index)


def test_layers_not_asked_for_are_neither_active_nor_unavailable() -> None:
    verdict = run_sandbox("OsLimits(seccomp=False, landlock=False)", INET_SOCKET)
    notes = verdict["notes"]
    reported = set(notes["active"]) | {name for name, _ in notes["unavailable"]}
    assert not reported & {"seccomp", "landlock"}
    assert notes["inet_socket"] == "ok"  # no filter, so no kill
    assert verdict["exit"] == 0


@needs_root
def test_nproc_is_reported_unavailable_while_still_root() -> None:
    notes = run_sandbox("OsLimits(drop_privileges=False)", "")["notes"]
    assert "uid_drop" not in notes["active"]
    assert dict(notes["unavailable"])["nproc"].startswith("still root")


def test_confinement_without_process_limits_still_installs_and_says_what_is_missing() -> None:
    harness = HARNESS.replace("hardening.apply_process_limits()", "pass")
    assert harness != HARNESS
    done = subprocess.run(
        [sys.executable, "-c", harness, "OsLimits()", PROC_STATUS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40,
        check=True,
    )
    verdict = json.loads(done.stdout)
    skip_without("seccomp", verdict)
    notes = verdict["notes"]
    assert {"rlimits", "no_new_privs"} <= {name for name, _ in notes["unavailable"]}
    assert "seccomp" in notes["active"]  # no_new_privs was set on the way
    assert notes["Seccomp"] == "2"


# --- in-process, no fork -----------------------------------------------------------------------


@pytest.mark.parametrize("machine", sorted(ARCHES))
def test_every_supported_machine_assembles_a_filter(machine: str) -> None:
    code = assemble(program(ARCHES[machine]))
    assert code and len(code) % 8 == 0
    assert len(code) // 8 < 64


def test_an_unknown_machine_is_an_oserror_naming_it() -> None:
    with pytest.raises(OSError, match="riscv64"):
        SeccompFilter.prepare("riscv64")


def test_prepare_changes_nothing_in_the_preparing_process() -> None:
    def state() -> tuple[list[str], tuple[int, int]]:
        status = Path("/proc/self/status").read_text().splitlines()
        flags = [line for line in status if line.startswith(("NoNewPrivs", "Seccomp:", "Uid"))]
        return flags, resource.getrlimit(resource.RLIMIT_AS)

    before = state()
    hardening = PreparedHardening.prepare(OsLimits(memory_bytes=128 * MiB))
    try:
        assert state() == before
        assert len(hardening.inherited_fds) == (0 if hardening.landlock_abi == 0 else 1)
    finally:
        hardening.close()
        hardening.close()  # idempotent
    assert hardening.inherited_fds == ()
