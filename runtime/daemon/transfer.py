"""`dynworkers export` and `dynworkers import`: a single-host SQLite state, moved to PostgreSQL.

Host side, in the CLI's process, on an event loop of its own (`asyncio.run`). Export reads a
stopped daemon's state directory: the engine's instances, steps and buffered events
(engine.sqlite_store, through the store's own reads), the KV (runtime.kv) and the deployments on
disk (runtime.daemon.deployments), and writes the dump (runtime.daemon.transfer_format). Import
reads a whole dump, checks it, and writes it into a PostgreSQL store through the stores' own
code: the engine's `PostgresStore`, the KV's `PostgresKV`, the shared deployments' tables.

What is moved, and what is not: every instance keeps its id, status, params, output, error,
wake time, awaited event type and generation; its owner is cleared (the old host is gone), so
whichever host runs on the database claims it. Steps and buffered events move as recorded.
The hot-path metrics' history and the compile cache stay behind (each host fills its own).

Rules: export takes the state directory's owner lock for its whole run, so a running daemon
makes it stop with `StateDirInUse` naming the daemon's pid (stop the daemon first). Import
refuses, before writing anything, a dump that does not read or is cut short, and a dump whose
instance ids, KV keys or tenants already exist in the target, unless `replace` (then those
instances are deleted with their steps and events, those keys overwritten, those tenants'
deployment histories replaced). An import that fails halfway (the server lost) can be run
again with `replace`.

Errors: `TransferError` and its subclasses (transfer_format), `StateDirInUse`, `StoreError`;
the CLI prints each as one line and exits 2.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgspec

from dynworkers.engine.sqlite_store import SQLiteStore
from dynworkers.engine.store import InstanceRecord, StepRecord
from dynworkers.runtime.daemon import transfer_format as fmt
from dynworkers.runtime.daemon.deployments import Deployments, read_directory
from dynworkers.runtime.kv import KVStore
from dynworkers.runtime.state_dir import StateLock

if TYPE_CHECKING:
    from dynworkers.engine.postgres_db import Database
    from dynworkers.engine.postgres_store import PostgresStore
    from dynworkers.runtime.kv_postgres import PostgresKV

#: rows read per page
PAGE = 500
#: ids a conflict message names at most
SHOWN = 5


class ImportConflict(fmt.TransferError):
    """The target already holds rows with the dump's ids; `--replace` overwrites them."""


# --- export --------------------------------------------------------------------------------------


async def export_state(state_dir: Path, out: BinaryIO) -> Counter[str]:
    """Write the dump of a stopped daemon's state directory to `out`; the counts written."""
    if not state_dir.is_dir():
        raise fmt.TransferError(f"state directory {str(state_dir)!r} does not exist")
    engine_db, kv_db = state_dir / "engine.db", state_dir / "kv.db"
    if not engine_db.exists() and not kv_db.exists() and not (state_dir / "code").is_dir():
        raise fmt.TransferError(
            f"{str(state_dir)!r} holds no SQLite state (no engine.db, kv.db or code/): give "
            "the state directory of a daemon that ran with the default SQLite store"
        )
    lock = StateLock(state_dir)
    lock.acquire()  # StateDirInUse, naming the running daemon's pid
    counts: Counter[str] = Counter()

    def emit(record: fmt.Record) -> None:
        out.write(fmt.encode(record))
        counts[fmt.kind_of(record)] += 1

    try:
        out.write(fmt.encode(fmt.Header(fmt.FORMAT, fmt.VERSION, time.time(), str(state_dir))))
        if engine_db.exists():
            await _export_engine(engine_db, emit)
        if kv_db.exists():
            for entry in _kv_entries(kv_db):
                emit(fmt.KV(*entry))
        for record in _deployments(state_dir):
            emit(record)
        out.write(fmt.encode(fmt.End(dict(counts))))
        out.flush()
    finally:
        lock.release()
    return counts


async def _export_engine(path: Path, emit: Callable[[fmt.Record], None]) -> None:
    store = SQLiteStore(path)
    await store.open()
    try:
        after = ""
        while page := await store.all_instances(after, PAGE):
            for instance in page:
                fields = asdict(instance)
                fields.pop("owner")
                emit(fmt.Instance(**fields))
                for step in await store.steps(instance.id):
                    values = asdict(step)
                    values["step_kind"] = values.pop("kind")
                    emit(fmt.Step(**values))
                for event in await store.events(instance.id):
                    emit(fmt.Event(event.instance_id, event.type, event.payload, event.timestamp))
            after = page[-1].id
    finally:
        await store.close()


def _kv_entries(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    kv = KVStore(path)
    try:
        after = ("", "", "")
        while page := kv.entries(after, PAGE):
            yield from page
            after = page[-1][:3]
    finally:
        kv.close()


def _deployments(state_dir: Path) -> Iterator[fmt.Code | fmt.Deploy]:
    deployments = Deployments(state_dir, None)
    if not deployments.root.is_dir():
        return
    for folder in sorted(deployments.root.iterdir()):
        history = deployments.history(folder.name)
        written: set[str] = set()
        for entry in history:
            version = entry.get("version")
            if version is None or version in written:
                continue
            modules = read_directory(folder / str(version))
            yield fmt.Code(folder.name, str(version), str(entry["main_module"]), modules)
            written.add(str(version))
        for entry in history:
            removed = entry.get("removed", False)
            yield fmt.Deploy(
                folder.name,
                None if removed else str(entry["version"]),
                "directory" if removed else str(entry["source"]),
                float(entry["deployed_at"]),
            )


# --- import --------------------------------------------------------------------------------------


async def import_dump(dump: fmt.Dump, url: str, replace: bool = False) -> Counter[str]:
    """Write a checked dump into the PostgreSQL store at `url`; the counts written."""
    from dynworkers.engine.postgres_store import PostgresStore
    from dynworkers.runtime.daemon import shared_deployments as shared
    from dynworkers.runtime.kv_postgres import PostgresKV

    store, kv, deploys = PostgresStore(url), PostgresKV(url), shared.database(url)
    opened: list[PostgresStore | PostgresKV | Database] = []
    try:
        for part in (store, kv, deploys):
            await part.open()
            opened.append(part)
        existing = await _existing(store, kv, deploys, dump)
        if any(existing.values()) and not replace:
            raise ImportConflict(_conflict_message(existing))
        counts: Counter[str] = Counter()
        for instance_id in existing["instance"]:
            await store.delete_instance(instance_id)
        await _import_engine(store, dump, counts)
        for entry in dump.kv:
            value = msgspec.msgpack.decode(entry.value)
            await kv.put(entry.tenant, entry.namespace, entry.key, value)
            counts["kv"] += 1
        host = f"import@{socket.gethostname()}:{os.getpid()}"
        for tenant in sorted({c.tenant for c in dump.code} | {d.tenant for d in dump.deploys}):
            versions = [
                (c.version, c.main_module, c.modules) for c in dump.code if c.tenant == tenant
            ]
            history = [
                (d.version, d.source, d.deployed_at) for d in dump.deploys if d.tenant == tenant
            ]
            await shared.import_tenant(deploys, tenant, versions, history, host)
            counts["tenant"] += 1
        return counts
    finally:
        for part in reversed(opened):
            with contextlib.suppress(Exception):
                await part.close()


async def _existing(
    store: PostgresStore, kv: PostgresKV, deploys: Database, dump: fmt.Dump
) -> dict[str, list[str]]:
    from dynworkers.runtime.daemon import shared_deployments as shared

    wanted = {i.id for i in dump.instances}
    present: list[str] = []
    after = ""
    while page := await store.all_instances(after, PAGE):
        present.extend(r.id for r in page if r.id in wanted)
        after = page[-1].id
    keys = {(e.tenant, e.namespace, e.key) for e in dump.kv}
    taken: list[str] = []
    cursor = ("", "", "")
    while rows := await kv.entries(cursor, PAGE):
        taken.extend("/".join(r[:3]) for r in rows if r[:3] in keys)
        cursor = rows[-1][:3]
    tenants = {c.tenant for c in dump.code} | {d.tenant for d in dump.deploys}
    deployed = sorted(tenants & await shared.deployed_tenants(deploys))
    return {"instance": sorted(present), "kv": sorted(taken), "tenant": deployed}


def _conflict_message(existing: dict[str, list[str]]) -> str:
    parts = []
    for kind, found in existing.items():
        if found:
            shown = ", ".join(found[:SHOWN]) + (", ..." if len(found) > SHOWN else "")
            parts.append(f"{len(found)} {kind}(s) ({shown})")
    return (
        f"the target store already holds {'; '.join(parts)}: nothing was imported; import "
        "into an empty database, or pass --replace to overwrite them"
    )


async def _import_engine(store: PostgresStore, dump: fmt.Dump, counts: Counter[str]) -> None:
    records = [InstanceRecord(**msgspec.structs.asdict(i), owner=None) for i in dump.instances]
    for start in range(0, len(records), PAGE):
        counts["instance"] += len(await store.create_instances(records[start : start + PAGE]))
    for step in dump.steps:
        values = msgspec.structs.asdict(step)
        values["kind"] = values.pop("step_kind")
        await store.put_step(StepRecord(**values))
        counts["step"] += 1
    for event in dump.events:  # in the order they leave: add_event numbers them in turn
        await store.add_event(event.instance_id, event.type, event.payload, event.timestamp)
        counts["event"] += 1
