"""Faults to inject into real daemons: a small tmpfs to fill, a mount to make read-only.

`tmpfs(path, size)` mounts a real tmpfs (root only; the test is skipped with the reason when the
mount is refused) and unmounts it however the test ends; `fill(path)` writes until the disk says
ENOSPC and returns the filler file, whose removal frees the space again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def fill(path: Path) -> Path:
    """Write into `path` until the disk is full; the filler file."""
    filler = path / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as file:
        for size in (1 << 20, 1 << 12, 1):
            block = chunk[:size]
            while True:
                try:
                    file.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        with contextlib.suppress(OSError):
            os.fsync(file.fileno())
    return filler
