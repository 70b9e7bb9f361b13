"""The rules of durable steps that both sides apply: durations, retry config, limits, names.

Pure functions and constants; imported by the host engine and inside every sandbox (it imports
only the standard library). Bad input raises `ValueError` (or `TypeError`) with a message that
names the value and says what is accepted; callers turn that into their own typed errors.
"""

from __future__ import annotations

import re
from typing import Any

#: Step names longer than this are refused.
MAX_STEP_NAME = 256
#: Instance ids: a letter, digit or underscore, then letters, digits, - and _; at most 100.
INSTANCE_ID = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9\-_]{0,99}")
#: Workflow names, as Cloudflare's: at most 64 characters.
WORKFLOW_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9\-_]{0,63}")
#: Step results, instance params, outputs and event payloads, encoded, are at most this.
MAX_PAYLOAD_BYTES = 1 << 20
#: `do` steps one instance may record, unless the engine is configured otherwise (sleeps and
#: waits do not count, as on Cloudflare).
DEFAULT_MAX_STEPS = 10_000
#: Records of all kinds (do, sleep, wait) an instance may hold, per allowed `do` step: a bound on
#: the sleeps and waits a workflow that loops forever can pile up.
RECORDS_PER_STEP = 10
#: Event types follow the step-name limit.
MAX_EVENT_TYPE = 256
#: Instances one create_batch call may create.
MAX_BATCH = 100

#: `waiting_for` of an instance whose rollbacks terminate(rollback=True) asked for
ROLLBACK_MARK = "__rollback__"
#: event types that start with this are the engine's own (a child's end, a rollback)
RESERVED_EVENT_PREFIX = "__"

BACKOFFS = ("constant", "linear", "exponential")
DEFAULT_RETRIES = {"limit": 5, "delay": 10_000, "backoff": "exponential"}
DEFAULT_TIMEOUT_MS = 10 * 60 * 1000

_UNITS_MS = {
    "millisecond": 1,
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 604_800_000,
    # as Cloudflare's durations: a month is 30 days, a year 365
    "month": 2_592_000_000,
    "year": 31_536_000_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$")


def duration_ms(value: object, what: str = "duration") -> int:
    """Milliseconds for a number of milliseconds or a string like "10 seconds", "2 days"."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be milliseconds or a string like '5 minutes', not a bool")
    if isinstance(value, (int, float)):
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"{what} must be a finite number of milliseconds >= 0, got {value}")
        return int(value)
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match and match.group(2) in _UNITS_MS:
            return int(float(match.group(1)) * _UNITS_MS[match.group(2)])
        raise ValueError(
            f"{what} {value!r} is not understood: use milliseconds (a number) or '<n> <unit>' "
            f"with unit one of {', '.join(_UNITS_MS)} (plural allowed)"
        )
    raise TypeError(f"{what} must be a number of milliseconds or a string, got {type(value)}")


def step_config(config: object) -> dict[str, Any]:
    """A complete, plain step config from the tenant's partial one (None: the defaults)."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TypeError("a step config must be a dict like {'retries': {...}, 'timeout': ...}")
    unknown = set(config) - {"retries", "timeout", "sensitive"}
    if unknown:
        raise ValueError(
            f"unknown step config keys {sorted(unknown)}: use 'retries', 'timeout', 'sensitive'"
        )
    sensitive = config.get("sensitive", False)
    if not isinstance(sensitive, bool):
        raise TypeError("step config 'sensitive' is True or False")
    retries = config.get("retries")
    if retries is None:
        retries = {}
    if not isinstance(retries, dict):
        raise TypeError("step config 'retries' must be a dict with limit, delay, backoff")
    unknown = set(retries) - set(DEFAULT_RETRIES)
    if unknown:
        raise ValueError(f"unknown retries keys {sorted(unknown)}: use limit, delay, backoff")
    merged = {**DEFAULT_RETRIES, **retries}
    limit = merged["limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 1000:
        raise ValueError(f"retries limit must be an int in [0, 1000], got {limit!r}")
    if merged["backoff"] not in BACKOFFS:
        raise ValueError(f"retries backoff {merged['backoff']!r} must be one of {BACKOFFS}")
    timeout = config.get("timeout", DEFAULT_TIMEOUT_MS)
    timeout_ms = duration_ms(timeout, "step timeout")
    if timeout_ms <= 0:
        raise ValueError("a step timeout must be > 0")
    return {
        "retries": {
            "limit": limit,
            "delay": duration_ms(merged["delay"], "retries delay"),
            "backoff": merged["backoff"],
        },
        "timeout": timeout_ms,
        # recorded for replay, redacted from history and logs
        "sensitive": sensitive,
    }


def retry_delay_ms(config: dict[str, Any], attempts: int) -> int:
    """Wait before the next attempt, after `attempts` failed ones (1 = the first failed)."""
    retries = config["retries"]
    delay = int(retries["delay"])
    if retries["backoff"] == "constant":
        return delay
    if retries["backoff"] == "linear":
        return delay * attempts
    return int(delay * 2 ** min(attempts - 1, 40))


def check_step_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a step name must be a non-empty str, got {name!r}")
    if len(name) > MAX_STEP_NAME:
        raise ValueError(f"step name is {len(name)} characters; the limit is {MAX_STEP_NAME}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"step name {name!r} holds a control character: use printable text")
    return name


def check_instance_id(instance_id: object) -> str:
    if not isinstance(instance_id, str) or not INSTANCE_ID.fullmatch(instance_id):
        raise ValueError(
            f"instance id {instance_id!r} is not valid: 1-100 characters of letters, digits, "
            "- and _, not starting with -"
        )
    return instance_id


#: separates a workflow's name from an instance id inside the engine's id of a tenant's instance
#: (`<tenant>/<workflow>:<id>`); neither a workflow name nor an instance id may hold it
WORKFLOW_SEPARATOR = ":"


def tenant_of(engine_id: str) -> str | None:
    """The tenant of a tenant's instance (`acme/42` -> `acme`); None for the host's own."""
    tenant, slash, _ = engine_id.partition("/")
    return tenant if slash else None


def local_id(engine_id: str, tenant: str | None) -> str:
    """The id a tenant knows an instance by: the engine's id without the tenant and the
    workflow it was created through (`acme/orders:42` -> `42`)."""
    local = engine_id.removeprefix(f"{tenant}/") if tenant else engine_id
    return local.rpartition(WORKFLOW_SEPARATOR)[2]


def batch_items(items: object) -> list[tuple[Any, Any]]:
    """(id, params) of each item of a `create_batch` list."""
    if not isinstance(items, list) or not items:
        raise ValueError("create_batch takes a non-empty list of {'id': ..., 'params': ...}")
    if len(items) > MAX_BATCH:
        raise ValueError(f"create_batch takes at most {MAX_BATCH} instances")
    pairs = []
    for item in items:
        if not isinstance(item, dict) or set(item) - {"id", "params"}:
            raise ValueError("each create_batch item is {'id': ..., 'params': ...}")
        pairs.append((item.get("id"), item.get("params")))
    return pairs


def restart_target(from_step: object) -> tuple[str, int, str]:
    """(name, occurrence from 0, kind) of `restart(from_step=...)`'s argument: a name (the do
    step of that name) or `{"name", "count" (from 1), "type"}`."""
    if isinstance(from_step, str):
        return from_step, 0, "do"
    if isinstance(from_step, dict) and set(from_step) <= {"name", "count", "type"}:
        name, count = from_step.get("name"), from_step.get("count", 1)
        kind = {"do": "do", "sleep": "sleep", "wait": "wait", "waitForEvent": "wait"}.get(
            from_step.get("type", "do")
        )
        if isinstance(name, str) and isinstance(count, int) and count >= 1 and kind:
            return name, count - 1, kind
    raise ValueError(
        "from_step is a step name or {'name': str, 'count': n >= 1, 'type': 'do'|'sleep'|'wait'}"
    )


def check_event_type(event_type: object) -> str:
    if not isinstance(event_type, str) or not event_type:
        raise TypeError(f"an event type must be a non-empty str, got {event_type!r}")
    if len(event_type) > MAX_EVENT_TYPE:
        raise ValueError(f"event type is {len(event_type)} characters; limit {MAX_EVENT_TYPE}")
    return event_type


def check_size(data: bytes, what: str) -> bytes:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"{what} is {len(data)} bytes encoded; the limit is {MAX_PAYLOAD_BYTES} (1 MiB): "
            "store large data elsewhere and pass a reference"
        )
    return data
