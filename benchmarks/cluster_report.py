"""The Markdown table of `benchmarks.cluster`'s report: each figure beside DBOS on PostgreSQL's,
their ratio and the issue's target (reported, never asserted).

Pure formatting, in the benchmark's process, after every measurement; a section that failed
(its report entry holds "error") shows as "-".
"""

from __future__ import annotations

from typing import Any

from dynworkers.benchmarks.cluster_hosts import SETTINGS, TENANTS
from dynworkers.benchmarks.common import fmt_ms

#: DBOS on PostgreSQL, measured earlier on this kind of machine (issue 10)
EARLIER_DBOS = {"per_second": 91.0, "per_step_us": 3100.0, "recovery_s": 8.6}


def _cell(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return "-"
    if unit == "ms":
        return fmt_ms(value)
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


def table(report: dict[str, Any]) -> str:
    """Markdown: each figure, DBOS on PostgreSQL's, dynworkers / DBOS, and the target."""
    dyn, ref, n = report["dynworkers"], report["dbos_postgresql"], report["counts"]
    c = n["concurrency"]
    at_once = ref.get("3_steps_at_once", {})
    rows: list[tuple[str, Any, Any, str, str]] = []
    for key, label in [
        ("postgresql_1_daemons", "PostgreSQL, 1 daemon"),
        ("postgresql_2_daemons", "PostgreSQL, 2 daemons"),
        ("postgresql_3_daemons", "PostgreSQL, 3 daemons"),
        ("sqlite_1_daemon", "SQLite, 1 daemon"),
        ("in_process_postgresql", "PostgreSQL, in-process Engine"),
    ]:
        row = dyn.get(key, {})
        target = ">= 3x DBOS" if key.startswith("postgresql") else ""
        what = f"3 steps, {c} at once, {TENANTS} tenants, {label}"
        rows.append(
            (f"{what}: wf/s", row.get("per_second"), at_once.get("per_second"), "wf/s", target)
        )
        rows.append(("  p50 latency", row.get("p50_ms"), at_once.get("p50_ms"), "ms", ""))
        rows.append(("  p99 latency", row.get("p99_ms"), at_once.get("p99_ms"), "ms", ""))
    per_step = ref.get("per_step", {}).get("per_step_us")
    for name in ("postgresql", "sqlite"):
        us = dyn.get(f"per_step_us_{name}")
        rows.append(
            (
                f"per-step overhead, {name} (in-process)",
                us and us / 1e3,
                per_step / 1e3 if per_step and name == "postgresql" else None,
                "ms",
                "<= 1 ms",
            )
        )
    t = dyn.get("takeover", {})
    first = t.get("first_s", {})
    lease = t.get("lease_s", SETTINGS["lease"])
    rows.append(
        (
            f"takeover after kill -9, p50 (lease {lease:g} s)",
            first.get("p50_ms"),
            None,
            "ms",
            f"<= {lease + 1:g} s",
        )
    )
    rows.append(("  max over trials", first.get("max_ms"), None, "ms", ""))
    rec, rrec = dyn.get("recovery", {}), ref.get("recovery", {})
    label = f"recovery of {rec.get('count', n['recovery']):,} sleeping, after due"
    rows.append((label, _s(rec.get("seconds")), _s(rrec.get("seconds")), "ms", "<= 2 s"))
    rows.append(
        (
            "  p50 completion after due",
            rec.get("completion_after_due", {}).get("p50_ms"),
            None,
            "ms",
            "",
        )
    )
    out = [
        "| measure | dynworkers | DBOS on PostgreSQL | dynworkers / DBOS | target |",
        "|---|---|---|---|---|",
    ]
    for label, a, b, unit, target in rows:
        ok = isinstance(a, int | float) and isinstance(b, int | float) and b
        ratio = f"{a / b:.2f}x" if ok else "-"
        out.append(f"| {label} | {_cell(a, unit)} | {_cell(b, unit)} | {ratio} | {target} |")
    e = EARLIER_DBOS
    out.append(
        "\nRatios: above 1 favours dynworkers for wf/s, below 1 does for times. "
        f"DBOS on PostgreSQL measured earlier on this kind of machine: {e['per_second']:.0f} "
        f"3-step wf/s, {e['per_step_us'] / 1e3:.1f} ms per step, recovery of 1,000 in "
        f"{e['recovery_s']} s. {report['cpus']} CPUs shared by PostgreSQL, the daemons, "
        f"their sandboxes and the client (load average {report['loadavg_start'][0]:.2f} at "
        "the start): they bound every figure."
    )
    return "\n".join(out)


def _s(seconds: Any) -> Any:
    return seconds * 1e3 if isinstance(seconds, int | float) else None
