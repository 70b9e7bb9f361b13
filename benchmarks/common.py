"""Shared pieces of the benchmarks: the handler under test, percentiles and unit formatting.

Pure standard library, so that the spawn and subprocess children of `benchmarks.alternatives`
can import it without paying for the runtime. Latencies are kept as float milliseconds
everywhere (JSON included); percentiles are nearest-rank over the raw samples, so with 30
samples p99 is the maximum.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: The trivial handler every row runs: a module-level fetch that returns "ok".
HANDLER_SRC = (
    'from workers import Response\ndef fetch(request, env, ctx):\n    return Response("ok")\n'
)
URL = "http://bench/"


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(samples_ms: list[float]) -> dict[str, Any]:
    """n, p50/p90/p99, mean, min and max of latencies in milliseconds."""
    ordered = sorted(samples_ms)
    out: dict[str, Any] = {"n": len(ordered)}
    for p in (50, 90, 99):
        out[f"p{p}_ms"] = percentile(ordered, p)
    out["mean_ms"] = sum(ordered) / len(ordered) if ordered else math.nan
    out["min_ms"] = ordered[0] if ordered else math.nan
    out["max_ms"] = ordered[-1] if ordered else math.nan
    return out


def fmt_ms(value: float | None) -> str:
    """A latency in ms, printed in the unit that keeps 3 significant figures readable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value < 1.0:
        return f"{value * 1e3:.0f} us"
    if value < 1000.0:
        return f"{value:.2f} ms"
    return f"{value / 1e3:.2f} s"


def fmt_bytes(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value / (1 << 20):.2f} MiB"


def git(*args: str) -> str:
    """`git <args>` in the repository, for the environment section of a result ("" on failure)."""
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def children_cpu_seconds() -> float:
    """CPU seconds used so far by this process's live descendants (a zygote, its sandboxes)."""
    import psutil  # here, not at the top: the rest of this module is the standard library alone

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue  # ended meanwhile
        total += times.user + times.system
    return total
