"""The DBOS Transact baseline of the workflow benchmarks: DBOS on a local SQLite system database,
or on a PostgreSQL one (`url`, for benchmarks.cluster).

DBOS (PyPI `dbos`) is a process-global singleton, so every measurement runs in a fresh
`multiprocessing` "spawn" child that configures `DBOS(config={"name": ..., "system_database_url":
"sqlite:////tmp/.../dbos.sqlite", "log_level": "WARNING"})`, registers its functions with
`@DBOS.step` / `@DBOS.workflow` and calls `DBOS.launch()`. Nothing reaches the network: there is
no conductor key, no OTLP endpoint and no Postgres URL. DBOS leaves SQLite in its default
rollback-journal mode (it sets only busy_timeout, foreign_keys and BEGIN IMMEDIATE), so
`make_wal_db` pre-creates each file with `PRAGMA journal_mode=WAL`, which persists in the file;
`synchronous` stays at SQLite's default (FULL), unless `durability="process"`: then the child
listens for every SQLAlchemy connection DBOS opens and sets `PRAGMA synchronous=NORMAL` on it
(dynworkers' "process" durability: survives kill -9, not a power loss). Every run gets its own
temporary directory.
With `url="postgresql://..."` (a fresh, empty database the caller made), the same functions put
DBOS's system database there instead (`system_database_url`, the only database setting of DBOS 3.4+;
DBOS creates its `dbos` schema and uses psycopg); nothing else changes.

* `throughput`: `count` workflows of `steps` trivial steps (`x + 1`). Sequentially, the workflow
  function is called directly; with `concurrency` > 1, `concurrency` client threads each call
  `DBOS.start_workflow(...).get_result()`, DBOS's own way to run a workflow in the background
  (on its executor thread pool), so `concurrency` workflows are in flight at once. A few warm-up
  workflows run first. Latency is per workflow, from call to result.
* `per_step_overhead_us`: (mean time of a 3-step workflow - that of a 0-step one) / 3, both
  measured sequentially in separate fresh processes.
* `recovery`: a child starts `count` workflows that each run one step and then a durable
  `DBOS.sleep`, waits (via `DBOS.list_workflow_steps`) until every sleep is checkpointed and is
  then SIGKILLed. Once every recorded wake time has passed, a fresh child launches DBOS on the
  same file; DBOS's startup recovery (pending workflows of this executor id, "local", and this
  application version) re-enqueues them on its internal queue. `seconds` runs from the start of
  `DBOS(...)` + `DBOS.launch()` to every workflow being SUCCESS per `DBOS.list_workflows`.
  The internal queue's worker polls every ~1.0 s (DBOS's default, not settable in the config),
  so this figure has a floor of about one second whatever `count` is.

Imports only the standard library (and `benchmarks.common`) at module level: `dbos` is imported
in the children only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dynworkers.benchmarks.common import percentile

APP_NAME = "dynworkers-bench"
CHILD_TIMEOUT_S = 900.0
POLL_S = 0.005


def make_wal_db(path: str) -> str:
    """Create the SQLite file in WAL mode (a persistent setting); return the mode in force."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])


def journal_mode(path: str) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


@contextlib.contextmanager
def _temp_db(url: str | None = None) -> Iterator[str]:
    """`url` if given, else a fresh WAL-mode SQLite file in a temporary directory (removed
    afterwards); yields DBOS's `system_database_url`."""
    if url is not None:
        yield url
        return
    tmp = tempfile.mkdtemp(prefix="dbos-bench-")
    try:
        path = os.path.join(tmp, "dbos.sqlite")
        make_wal_db(path)
        yield f"sqlite:///{path}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sqlite_path(db_url: str) -> str | None:
    return db_url.removeprefix("sqlite:///") if db_url.startswith("sqlite:///") else None


def _set_durability(db_url: str, durability: str) -> None:
    """In a child: "process" sets synchronous=NORMAL on every SQLite connection opened later."""
    if durability == "full" or not db_url.startswith("sqlite:///"):
        return
    if durability != "process":
        raise ValueError(f"durability must be full or process, got {durability!r}")
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def pragma(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(Engine, "connect", pragma)


def _launch(db_url: str) -> tuple[Callable[[int], int], Callable[[int, float], int]]:
    """In a child: configure DBOS on `db_url`, register the workflows, launch DBOS."""
    from dbos import DBOS

    DBOS(config={"name": APP_NAME, "system_database_url": db_url, "log_level": "WARNING"})

    @DBOS.step(name="add_one")
    def add_one(x: int) -> int:
        return x + 1

    @DBOS.workflow(name="chain")
    def chain(steps: int) -> int:
        x = 0
        for _ in range(steps):
            x = add_one(x)
        return x

    @DBOS.workflow(name="step_then_sleep")
    def step_then_sleep(x: int, sleep_s: float) -> int:
        y = add_one(x)
        DBOS.sleep(sleep_s)
        return y

    DBOS.launch()
    return chain, step_then_sleep


def _child(conn: Any, body: Callable[..., dict[str, Any] | None], *args: Any) -> None:
    """Spawn-child entry point: run `body(conn, *args)`, send its dict (or the error) back."""
    try:
        result = body(conn, *args)
        if result is not None:
            conn.send(result)
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


@contextlib.contextmanager
def _spawned(body: Callable[..., Any], *args: Any) -> Iterator[tuple[Any, Any]]:
    """Run `body(conn, *args)` in a fresh spawn process; yield (process, receiver); reap it."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, body, *args), daemon=True)
    proc.start()
    send.close()
    try:
        yield proc, recv
    finally:
        recv.close()
        proc.join(30.0)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _receive(recv: Any, timeout: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    if not recv.poll(timeout):
        raise TimeoutError(f"DBOS child sent nothing within {timeout:.0f} s")
    out: dict[str, Any] = recv.recv()
    if "error" in out:
        raise RuntimeError(f"DBOS child failed:\n{out['error']}")
    return out


def _run(body: Callable[..., Any], *args: Any) -> dict[str, Any]:
    with _spawned(body, *args) as (_, recv):
        return _receive(recv)


def _throughput_body(
    _conn: Any, db_url: str, steps: int, concurrency: int, count: int, durability: str = "full"
) -> dict[str, Any]:
    from dbos import DBOS

    _set_durability(db_url, durability)
    chain, _ = _launch(db_url)
    warmup = min(5, count)

    def one(_: int) -> float:
        t0 = time.perf_counter()
        if concurrency == 1:
            result = chain(steps)
        else:  # DBOS's background start: the workflow runs on DBOS's executor pool
            result = DBOS.start_workflow(chain, steps).get_result()
        if result != steps:
            raise AssertionError(f"workflow returned {result}, expected {steps}")
        return (time.perf_counter() - t0) * 1000.0

    for i in range(warmup):
        one(i)
    t0 = time.perf_counter()
    if concurrency == 1:
        latencies = [one(i) for i in range(count)]
    else:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="bench-client") as pool:
            latencies = list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - t0
    DBOS.destroy()
    ordered = sorted(latencies)
    return {
        "steps": steps,
        "concurrency": concurrency,
        "count": count,
        "warmup": warmup,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "mean_ms": elapsed * 1000.0 / count,
        "p50_ms": percentile(ordered, 50),
        "p99_ms": percentile(ordered, 99),
    }


def throughput(
    steps: int, concurrency: int, count: int, url: str | None = None, durability: str = "full"
) -> dict[str, Any]:
    """Workflows per second and per-workflow latency for `count` workflows of `steps` steps
    (on `url`, a fresh PostgreSQL database, if given; SQLite at `durability`)."""
    if concurrency < 1 or count < 1:
        raise ValueError("concurrency and count must be >= 1")
    with _temp_db(url) as db_url:
        out = _run(_throughput_body, db_url, steps, concurrency, count, durability)
        out["durability"] = durability
        path = _sqlite_path(db_url)
        out["journal_mode"] = journal_mode(path) if path else "postgresql"
    return out


def per_step_overhead_us(
    count: int, url0: str | None = None, url3: str | None = None
) -> dict[str, Any]:
    """Cost of one checkpointed step: (3-step - 0-step sequential workflow time) / 3 (on two
    fresh PostgreSQL databases `url0` and `url3`, if given)."""
    wf0 = throughput(0, 1, count, url0)
    wf3 = throughput(3, 1, count, url3)
    return {
        "count": count,
        "per_step_us": (wf3["mean_ms"] - wf0["mean_ms"]) * 1000.0 / 3,
        "wf0_mean_ms": wf0["mean_ms"],
        "wf3_mean_ms": wf3["mean_ms"],
        "wf0_p50_ms": wf0["p50_ms"],
        "wf3_p50_ms": wf3["p50_ms"],
    }


def _crash_body(conn: Any, db_url: str, count: int, sleep_s: float) -> None:
    """Start the sleepers, report once all sleeps are checkpointed, then wait to be killed."""
    from dbos import DBOS

    _, step_then_sleep = _launch(db_url)
    ids = [DBOS.start_workflow(step_then_sleep, i, sleep_s).get_workflow_id() for i in range(count)]
    while True:
        steps = [DBOS.list_workflow_steps(wf_id) for wf_id in ids]
        if all(len(s) >= 2 for s in steps):
            break
        time.sleep(POLL_S)
    conn.send({"ids": ids, "wake_epoch": max(float(s[1]["output"] or 0.0) for s in steps)})
    time.sleep(3600.0)  # the parent SIGKILLs this process


def _recover_body(_conn: Any, db_url: str, ids: list[str]) -> dict[str, Any]:
    from dbos import DBOS

    t0 = time.perf_counter()
    _launch(db_url)
    launched = time.perf_counter() - t0
    while True:
        done = DBOS.list_workflows(
            workflow_ids=ids, status="SUCCESS", load_input=False, load_output=False
        )
        if len(done) == len(ids):
            break
        time.sleep(POLL_S)
    seconds = time.perf_counter() - t0
    DBOS.destroy()
    return {"seconds": seconds, "launch_seconds": launched}


def _status_counts(db_url: str) -> dict[str, int]:
    path = _sqlite_path(db_url)
    if path is None:  # DBOS's tables live in its `dbos` schema on PostgreSQL
        import psycopg

        with psycopg.connect(db_url) as pg:
            sql = "SELECT status, COUNT(*) FROM dbos.workflow_status GROUP BY status"
            return {str(status): int(n) for status, n in pg.execute(sql).fetchall()}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM workflow_status GROUP BY status")
        return {str(status): int(n) for status, n in rows}


def recovery(count: int, sleep_s: float = 1.0, url: str | None = None) -> dict[str, Any]:
    """Seconds for a fresh DBOS process to finish `count` workflows left pending by a kill -9
    (on `url`, a fresh PostgreSQL database, if given)."""
    with _temp_db(url) as db_url:
        with _spawned(_crash_body, db_url, count, sleep_s) as (proc, recv):
            started = _receive(recv)
            proc.kill()  # SIGKILL: no atexit, no DBOS shutdown
            proc.join()
        at_kill = _status_counts(db_url)
        if at_kill.get("PENDING", 0) != count:
            raise RuntimeError(f"expected {count} PENDING workflows at kill, found {at_kill}")
        time.sleep(max(0.0, started["wake_epoch"] - time.time() + 0.01))
        t0 = time.perf_counter()
        out = _run(_recover_body, db_url, started["ids"])
        out["process_seconds"] = time.perf_counter() - t0
        out["count"] = count
        out["sleep_s"] = sleep_s
        out["exit_code_of_killed"] = proc.exitcode
        out["after"] = _status_counts(db_url)
        path = _sqlite_path(db_url)
        out["journal_mode"] = journal_mode(path) if path else "postgresql"
    return out


def _dbos_version() -> str:
    from importlib.metadata import version

    return version("dbos")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check it works")
    args = parser.parse_args(argv)
    count, concurrency, rec_count = (20, 4, 20) if args.quick else (500, 8, 200)
    report = {
        "dbos_version": _dbos_version(),
        "sqlite": {"version": sqlite3.sqlite_version, "journal_mode": "wal (pre-set)"},
        "sequential_3_steps": throughput(3, 1, count),
        "concurrent_3_steps": throughput(3, concurrency, count),
        "per_step": per_step_overhead_us(count),
        "recovery": recovery(rec_count),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
