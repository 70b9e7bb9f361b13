"""The dump format of `dynworkers export` and `import` (version 1): one JSON object a line.

Host side, in the CLI's process; pure data, no I/O beyond the lines it is given. Every line is one
msgspec `Struct` encoded as JSON, tagged by its "kind"; bytes fields (payloads, results, KV values,
all msgpack as the stores keep them) are base64 strings, as msgspec writes bytes in JSON. No
pickle: a dump is data, whoever wrote it.

    {"kind":"header","format":"dynworkers-export","version":1,"created":<epoch>,"source":<dir>}
    {"kind":"instance", ...}   an instance, every field but its owner (the old host is gone)
    {"kind":"step", ...}       a recorded step of the instance above it
    {"kind":"event", ...}      a buffered event of the instance above it, in the order they leave
    {"kind":"kv","tenant","namespace","key","value"}
    {"kind":"code","tenant","version","main_module","modules":{name: source}}
    {"kind":"deploy","tenant","version"|null,"source","deployed_at"}   history, oldest first
    {"kind":"end","counts":{"instance":N,"step":N,...}}

The end line makes a truncated dump detectable: import refuses a dump whose counts do not
match what it read, or with no end line, before it writes anything. A later version may append
kinds and fields (with defaults); import refuses a version newer than its own.

Errors: `DumpInvalid` (a ValueError) naming the line number and what is wrong with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from dynworkers.runtime.errors import DynworkersError

FORMAT = "dynworkers-export"
VERSION = 1


class TransferError(DynworkersError):
    """`dynworkers export` or `import` could not do its work; the message says what to do."""


class DumpInvalid(TransferError, ValueError):
    """The dump is not one `dynworkers export` wrote, or it is cut short."""


class Header(msgspec.Struct, tag="header", tag_field="kind"):
    format: str
    version: int
    created: float
    source: str = ""


class Instance(msgspec.Struct, tag="instance", tag_field="kind"):
    id: str
    workflow: str
    status: str
    params: bytes
    created: float
    updated: float
    tenant: str | None = None
    version: str | None = None
    output: bytes | None = None
    error: bytes | None = None
    wake_at: float | None = None
    waiting_for: str | None = None
    generation: int = 0
    #: the instance that started this one (`step.start_child`); fields are only appended
    parent: str | None = None


class Step(msgspec.Struct, tag="step", tag_field="kind"):
    instance_id: str
    position: int
    #: the step record's kind ("do", "sleep", ...); "kind" is the line's tag
    step_kind: str
    name: str
    occurrence: int
    status: str
    result: bytes | None = None
    error: bytes | None = None
    attempts: int = 0
    config: bytes | None = None
    wake_at: float | None = None


class Event(msgspec.Struct, tag="event", tag_field="kind"):
    instance_id: str
    type: str
    payload: bytes
    timestamp: float


class KV(msgspec.Struct, tag="kv", tag_field="kind"):
    tenant: str
    namespace: str
    key: str
    value: bytes


class Code(msgspec.Struct, tag="code", tag_field="kind"):
    tenant: str
    version: str
    main_module: str
    modules: dict[str, str]


class Deploy(msgspec.Struct, tag="deploy", tag_field="kind"):
    tenant: str
    version: str | None
    source: str
    deployed_at: float


class End(msgspec.Struct, tag="end", tag_field="kind"):
    counts: dict[str, int]


Record = Header | Instance | Step | Event | KV | Code | Deploy | End
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)


def encode(record: Record) -> bytes:
    return _encoder.encode(record) + b"\n"


def kind_of(record: Record) -> str:
    return type(record).__name__.lower()


@dataclass
class Dump:
    """A whole dump, read and checked."""

    header: Header
    instances: list[Instance] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    kv: list[KV] = field(default_factory=list)
    code: list[Code] = field(default_factory=list)
    deploys: list[Deploy] = field(default_factory=list)


def read(lines: Iterable[bytes]) -> Dump:
    """Parse and check every line; DumpInvalid for the first thing wrong."""
    dump: Dump | None = None
    counts: Counter[str] = Counter()
    ended = False
    ids: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if ended:
            raise DumpInvalid(f"line {number}: data after the end line: the dump was altered")
        try:
            record = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise DumpInvalid(
                f"line {number} is not a dump record ({exc}): give a file `dynworkers export` wrote"
            ) from None
        if dump is None:
            dump = _start(record, number)
            continue
        if isinstance(record, Header):
            raise DumpInvalid(f"line {number}: a second header: concatenated dumps import apart")
        if isinstance(record, End):
            _check_counts(record, counts)
            ended = True
            continue
        if isinstance(record, (Step, Event)) and record.instance_id not in ids:
            raise DumpInvalid(f"line {number}: a {kind_of(record)} of unknown instance")
        if isinstance(record, Instance):
            ids.add(record.id)
        counts[kind_of(record)] += 1
        _add(dump, record)
    if dump is None:
        raise DumpInvalid("the dump is empty: give a file `dynworkers export` wrote")
    if not ended:
        raise DumpInvalid("the dump has no end line: it was cut short; export it again")
    return dump


def _start(record: Record, number: int) -> Dump:
    if not isinstance(record, Header) or record.format != FORMAT:
        raise DumpInvalid(f"line {number} is not a {FORMAT} header: give a file it wrote")
    if record.version > VERSION:
        raise DumpInvalid(
            f"the dump is format version {record.version}, newer than this dynworkers "
            f"({VERSION}): import it with the dynworkers that exported it, or a newer one"
        )
    return Dump(record)


def _check_counts(end: End, counts: Counter[str]) -> None:
    for kind, expected in end.counts.items():
        if counts[kind] != expected:
            raise DumpInvalid(
                f"the dump's end line counts {expected} {kind} record(s) but it holds "
                f"{counts[kind]}: it was altered or cut; export it again"
            )


def _add(dump: Dump, record: Record) -> None:
    if isinstance(record, Instance):
        dump.instances.append(record)
    elif isinstance(record, Step):
        dump.steps.append(record)
    elif isinstance(record, Event):
        dump.events.append(record)
    elif isinstance(record, KV):
        dump.kv.append(record)
    elif isinstance(record, Code):
        dump.code.append(record)
    elif isinstance(record, Deploy):
        dump.deploys.append(record)
