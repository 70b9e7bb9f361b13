"""What an instance did: the entries its wake-ups and operations append, and the view users read.

Host side, on the engine's event loop; plain functions over records. Sessions append an entry in
the same store transaction as the step record it describes (an attempt's end, a sleep, a wait, an
event taken, a child started), so the history never claims what the store does not hold; engine
operations (pause, resume, terminate, restart, an event sent) append theirs.

`view()` is what `GET /_/tenants/<t>/instances/<id>/history`, `dynworkers workflows history`,
`Instance.history()` and a tenant's `instance.history()` return:

    {"id", "workflow", "status", "created", "updated",
     "steps": [{"name", "kind", "count", "position", "status", "sensitive", "result_bytes",
                "wake_at", "attempts": [{"attempt", "start", "end", "duration_ms", "outcome",
                                         "error": {"name", "message"} | None}]}],
     "timeline": [{"at", "kind", ...}]}

Results are never in the history, only their size; for a step marked `sensitive` the size and
error messages are redacted too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dynworkers.engine.store import HistoryRecord, HistoryRow, InstanceRecord, StepRecord

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode

REDACTED = "[redacted: sensitive step]"


def row(at: float, kind: str, **detail: Any) -> HistoryRow:
    return (at, kind, _encode(detail))


def attempt(
    at: float,
    *,
    name: str,
    count: int,
    number: int,
    start: float | None,
    outcome: str,
    error: dict[str, str] | None = None,
    size: int | None = None,
) -> HistoryRow:
    """An attempt of a `do` step ended: complete, failed, retry (failed, to be retried), lost
    (its sandbox died or passed its deadline)."""
    return row(
        at,
        "attempt",
        name=name,
        count=count,
        attempt=number,
        start=start,
        outcome=outcome,
        error=error,
        size=size,
    )


def view(
    record: InstanceRecord, steps: list[StepRecord], entries: list[HistoryRecord]
) -> dict[str, Any]:
    by_identity: dict[tuple[str, int], dict[str, Any]] = {}
    listed = []
    for step in sorted(steps, key=lambda s: s.position):
        config = _decode(step.config) if step.config else {}
        sensitive = bool(config.get("sensitive")) if isinstance(config, dict) else False
        entry = {
            "name": step.name,
            "kind": step.kind,
            "count": step.occurrence + 1,
            "position": step.position,
            "status": step.status,
            "sensitive": sensitive,
            "result_bytes": None if sensitive or step.result is None else len(step.result),
            "wake_at": step.wake_at,
            "attempts": [],
        }
        by_identity[(step.name, step.occurrence + 1)] = entry
        listed.append(entry)
    timeline = []
    for item in entries:
        detail = _decode(item.detail)
        if item.kind == "attempt":
            step_entry = by_identity.get((detail["name"], detail["count"]))
            sensitive = bool(step_entry and step_entry["sensitive"])
            error = detail.get("error")
            if error and sensitive:
                error = {"name": error.get("name"), "message": REDACTED}
            start = detail.get("start")
            attempt_entry = {
                "attempt": detail.get("attempt"),
                "start": start,
                "end": item.at,
                "duration_ms": None if start is None else round((item.at - start) * 1000, 3),
                "outcome": detail.get("outcome"),
                "error": error,
            }
            if step_entry is not None:
                step_entry["attempts"].append(attempt_entry)
                if detail.get("size") is not None and not sensitive:
                    step_entry["result_bytes"] = detail["size"]
                continue
            timeline.append({"at": item.at, "kind": "attempt", **detail, **attempt_entry})
            continue
        timeline.append({"at": item.at, "kind": item.kind, **detail})
    return {
        "id": record.id,
        "workflow": record.workflow,
        "status": record.status,
        "created": record.created,
        "updated": record.updated,
        "steps": listed,
        "timeline": timeline,
    }
