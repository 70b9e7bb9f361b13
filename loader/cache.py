"""Compile cache: marshalled code objects keyed by source hash and policy version.

Host side, called from the event loop's thread or a worker thread (the memory map is guarded by a
lock). Two tiers: an LRU in memory and one file per entry under the state directory, so that a
rehydrated tenant, or a restarted host, never recompiles. The key includes the interpreter's
cache tag, because marshal's format is specific to it.

Only the host writes here. Each file starts with the SHA-256 of what follows; a file whose digest
does not match (truncated, corrupted) is a miss and gets rewritten. Disk errors are logged and
ignored: the cache is an optimisation, never a source of truth.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("dynworkers.loader")

_TAG = (sys.implementation.cache_tag or "python").encode()


def cache_key(policy_version: str, filename: str, source: str) -> str:
    digest = hashlib.sha256(_TAG + b"\0" + policy_version.encode() + b"\0" + filename.encode())
    digest.update(b"\0" + source.encode())
    return digest.hexdigest()


class CompileCache:
    def __init__(self, directory: str | Path | None, max_entries: int = 4096) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_entries = max_entries
        self.memory: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = self.disk_hits = self.misses = 0
        if self.directory is not None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.bin"

    def get(self, key: str) -> bytes | None:
        with self.lock:
            code = self.memory.get(key)
            if code is not None:
                self.memory.move_to_end(key)
                self.hits += 1
                return code
        if self.directory is not None:
            try:
                data = self._path(key).read_bytes()
            except OSError:
                data = b""
            digest, code = data[:32], data[32:]
            if code and hashlib.sha256(code).digest() == digest:
                self._remember(key, code)
                self.disk_hits += 1
                return code
        self.misses += 1
        return None

    def put(self, key: str, code: bytes) -> None:
        self._remember(key, code)
        if self.directory is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private to the host
            with os.fdopen(fd, "wb") as out:
                out.write(hashlib.sha256(code).digest() + code)
            os.replace(tmp, path)  # atomic: a reader sees the whole file or none
        except OSError as exc:
            log.warning("compile cache: could not write %s: %s", path, exc)

    def _remember(self, key: str, code: bytes) -> None:
        with self.lock:
            self.memory[key] = code
            self.memory.move_to_end(key)
            while len(self.memory) > self.max_entries:
                self.memory.popitem(last=False)
