"""What Landlock lets a sandbox read: the interpreter, its standard library and the packages
imported, never an ancestor of the host's working directory, site-packages as a whole, /home or
/root."""

from __future__ import annotations

import os
import site
import sys

from dynworkers.sandbox_policy.landlock import readable_paths


def _covers(allowed: list[str], path: str) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in allowed)


def test_readable_paths_cover_the_interpreter_and_imported_packages() -> None:
    import msgspec

    allowed = readable_paths()
    assert _covers(allowed, os.path.realpath(sys.executable))
    assert _covers(allowed, os.path.realpath(os.__file__))
    assert _covers(allowed, os.path.realpath(msgspec.__file__))


def test_readable_paths_never_cover_the_host_directories() -> None:
    allowed = readable_paths()
    for path in (os.getcwd(), "/home", "/root", "/", "/etc", "/tmp", "/proc"):
        assert not _covers(allowed, os.path.realpath(path)), path
    for folder in site.getsitepackages():
        assert not _covers(allowed, os.path.realpath(folder)), folder
