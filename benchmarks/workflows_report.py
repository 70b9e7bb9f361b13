"""The Markdown table of `benchmarks.workflows`' report: each figure of dynworkers beside DBOS's
and their ratio (dynworkers / DBOS; for wf/s above 1 favours dynworkers, for times below 1 does).

Pure formatting, in the benchmark's process, after every measurement; a section that failed (its
report entry holds "error") shows as "-".
"""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, unit: str = "") -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.3g}{unit}"


def _row(label: str, a: Any, b: Any, unit: str = "") -> str:
    ok = isinstance(a, int | float) and isinstance(b, int | float) and b
    return f"| {label} | {_fmt(a, unit)} | {_fmt(b, unit)} | {f'{a / b:.2f}x' if ok else '-'} |"


def table(report: dict[str, Any], c: int, tenants: int) -> str:
    """Markdown: each figure of both sides and dynworkers / DBOS (`c` in flight; the spread
    rows over `tenants` tenants)."""
    dyn, ref = report["dynworkers"], report["dbos"]
    rows: list[tuple[str, Any, Any, str]] = []
    for steps in (0, 3):
        for key, rkey, label in [
            ("sequential", "sequential", "sequential"),
            (f"{c}_at_once_1_tenant", f"{c}_at_once", f"{c} at once"),
            (f"{c}_at_once_{tenants}_tenants", f"{c}_at_once", f"{c} at once, {tenants} tenants"),
        ]:
            d, r = dyn.get(f"{steps}_steps_{key}", {}), ref.get(f"{steps}_steps_{rkey}", {})
            for field, suffix, unit in [
                ("per_second", "", " wf/s"),
                ("p50_ms", " p50", " ms"),
                ("p99_ms", " p99", " ms"),
            ]:
                rows.append((f"{steps} steps, {label}{suffix}", d.get(field), r.get(field), unit))
        d = dyn.get(f"{steps}_steps_sequential_process", {})
        r = ref.get(f"{steps}_steps_sequential_process", {})
        for field, suffix, unit in [
            ("per_second", "", " wf/s"),
            ("p50_ms", " p50", " ms"),
            ("p99_ms", " p99", " ms"),
        ]:
            label = f"{steps} steps, sequential, durability process{suffix}"
            rows.append((label, d.get(field), r.get(field), unit))
    for suffix, label in (("", ""), ("_process", ", durability process")):
        for part in ("host", "sandbox"):
            cpu = dyn.get(f"per_step_{part}_cpu_us{suffix}")
            rows.append((f"per-step {part} CPU{label}", cpu, None, " us"))
    dr, rr, w = dyn.get("recovery", {}), ref.get("recovery", {}), dyn.get("waiting", {})
    rows += [
        ("per-step overhead", dyn.get("per_step_us"), ref.get("per_step_us"), " us"),
        (
            "per-step overhead (from p50s)",
            dyn.get("per_step_us_from_p50"),
            ref.get("per_step_us_from_p50"),
            " us",
        ),
        (
            "per-step overhead, durability process",
            dyn.get("per_step_us_process"),
            ref.get("per_step_us_process"),
            " us",
        ),
        (
            "per-step overhead, durability process (from p50s)",
            dyn.get("per_step_us_from_p50_process"),
            ref.get("per_step_us_from_p50_process"),
            " us",
        ),
        (
            f"recovery of {dr.get('count', '?')} after kill -9",
            dr.get("seconds"),
            rr.get("seconds"),
            " s",
        ),
        ("  of which start", dr.get("launch_seconds"), rr.get("launch_seconds"), " s"),
    ]
    for key in ("waiting", "waiting_20_sandboxes"):
        w = dyn.get(key, {})
        if "lateness" not in w:
            continue
        label = f"{w['count']:,} waiting, max_sandboxes {w.get('max_sandboxes', 8)}"
        rows += [
            (f"{label}: host RSS", w["host_rss_hibernating"] / 2**20, None, " MiB"),
            ("  host bytes per instance", w["host_bytes_per_instance"], None, " B"),
            ("  first wake-ups", w.get("first_wake_ups_per_second"), None, "/s"),
            ("  due wake-ups", w.get("due_wake_ups_per_second"), None, "/s"),
            ("  wake lateness p50", w["lateness"]["p50_ms"], None, " ms"),
            ("  wake lateness p99", w["lateness"]["p99_ms"], None, " ms"),
            ("  host CPU per first wake-up", w.get("host_cpu_us_per_first_wake_up"), None, " us"),
            ("  host CPU per due wake-up", w.get("host_cpu_us_per_due_wake_up"), None, " us"),
        ]
    head = ["| measure | dynworkers | DBOS | dynworkers / DBOS |", "|---|---|---|---|"]
    return "\n".join(head + [_row(*row) for row in rows])
