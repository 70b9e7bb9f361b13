"""The floor under a warm call: one round trip between two processes, with nothing else in it.

    python -m dynworkers.benchmarks.transport_floor [--quick] [--out FILE.json]

A warm dispatch (and a request through the daemon's front door at one connection) crosses the
process boundary twice. Whatever the runtime does around that crossing, the crossing itself has a
price set by the transport and by how fast this machine wakes a sleeping thread. This benchmark
measures only that price, side by side in one run, with a 16-byte payload echoed by a forked
child (no Python work beyond the loop):

* `pipe`: two os.pipe()s, blocking read/write (one thread each side: 2 wake-ups a round trip);
* `zmq ipc PAIR`: what dynworkers uses between host and sandbox, a PAIR socket over ipc://, each
  side with its own context (libzmq's I/O thread on each side: 4 thread wake-ups a round trip);
* `zmq inproc PAIR`, in one process, two threads: the I/O threads out of the path (the lower
  bound for ZeroMQ itself, not usable across processes).

Reports p50/p90/p99 per round trip and the ratio of each to the pipe's p50. An idle machine
shows the wake-up cost at its highest: every side sleeps between messages, as at one connection.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any

import zmq

from dynworkers.benchmarks.common import summarize

PAYLOAD = b"x" * 16
WARMUP = 200


def _pipe(samples: int) -> list[float]:
    to_child_r, to_child_w = os.pipe()
    to_host_r, to_host_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo: read 16 bytes, write them back, until EOF
        try:
            os.close(to_child_w)
            os.close(to_host_r)
            while data := os.read(to_child_r, len(PAYLOAD)):
                os.write(to_host_w, data)
        finally:
            os._exit(0)
    os.close(to_child_r)
    os.close(to_host_w)
    times = []
    try:
        for n in range(WARMUP + samples):
            started = time.perf_counter()
            os.write(to_child_w, PAYLOAD)
            os.read(to_host_r, len(PAYLOAD))
            if n >= WARMUP:
                times.append((time.perf_counter() - started) * 1e3)
    finally:
        os.close(to_child_w)
        os.close(to_host_r)
        os.waitpid(pid, 0)
    return times


def _zmq_ipc(samples: int) -> list[float]:
    path = os.path.join(tempfile.mkdtemp(prefix="dwfloor"), "s")
    address = f"ipc://{path}"
    pid = os.fork()
    if pid == 0:  # the echo, with a context of its own (a context never crosses a fork)
        try:
            context = zmq.Context(io_threads=1)
            socket = context.socket(zmq.PAIR)
            socket.connect(address)
            while (data := socket.recv()) != b"":
                socket.send(data)
            socket.close(linger=0)
            context.term()
        finally:
            os._exit(0)
    context = zmq.Context(io_threads=1)
    socket = context.socket(zmq.PAIR)
    socket.bind(address)
    times = []
    try:
        for n in range(WARMUP + samples):
            started = time.perf_counter()
            socket.send(PAYLOAD)
            socket.recv()
            if n >= WARMUP:
                times.append((time.perf_counter() - started) * 1e3)
        socket.send(b"")
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        socket.close(linger=0)
        context.term()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return times


def _zmq_inproc(samples: int) -> list[float]:
    context = zmq.Context(io_threads=1)
    host = context.socket(zmq.PAIR)
    host.bind("inproc://floor")
    echo = context.socket(zmq.PAIR)
    echo.connect("inproc://floor")

    def serve() -> None:
        while (data := echo.recv()) != b"":
            echo.send(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    times = []
    for n in range(WARMUP + samples):
        started = time.perf_counter()
        host.send(PAYLOAD)
        host.recv()
        if n >= WARMUP:
            times.append((time.perf_counter() - started) * 1e3)
    host.send(b"")
    thread.join()
    echo.close(linger=0)
    host.close(linger=0)
    context.term()
    return times


def run(samples: int) -> dict[str, Any]:
    report: dict[str, Any] = {"samples": samples, "loadavg_start": os.getloadavg()[0]}
    for name, measure in (
        ("pipe", _pipe),
        ("zmq ipc PAIR", _zmq_ipc),
        ("zmq inproc PAIR", _zmq_inproc),
    ):
        report[name] = summarize(measure(samples))
    report["loadavg_end"] = os.getloadavg()[0]
    return report


def table(report: dict[str, Any]) -> str:
    base = report["pipe"]["p50_ms"]
    lines = ["| transport | p50 | p90 | p99 | p50 / pipe p50 |", "|---|---|---|---|---|"]
    for name in ("pipe", "zmq ipc PAIR", "zmq inproc PAIR"):
        row = report[name]
        lines.append(
            f"| {name} | {row['p50_ms'] * 1e3:.0f} us | {row['p90_ms'] * 1e3:.0f} us | "
            f"{row['p99_ms'] * 1e3:.0f} us | {row['p50_ms'] / base:.2f}x |"
        )
    lines.append(
        f"\nload average {report['loadavg_start']:.2f} at the start, "
        f"{report['loadavg_end']:.2f} at the end"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 round trips, not 20,000")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    report = run(1_000 if args.quick else 20_000)
    print(table(report))
    if args.out:
        with open(args.out, "w") as out:
            json.dump(report, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
