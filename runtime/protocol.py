"""The wire format: every message between host, zygote and sandbox.

Imported by the host, the zygote and every sandbox; it owns no state and does no I/O. Each message
is a frozen, `array_like` `msgspec.Struct` with an integer tag; fields are only ever appended, with
defaults (a golden-bytes test in tests/runtime/test_protocol.py catches a reorder). Encoders and
decoders are built once, here.

Two channels use it:
- host <-> sandbox, one ZeroMQ PAIR socket per sandbox: `ToSandbox` and `FromSandbox` unions.
  Tenant identity is never a field: the host binds it to the socket.
- host <-> zygote, a pair of pipes: `ToZygote` and `FromZygote`, length-prefixed frames.

A frame that does not decode raises `msgspec.DecodeError` / `msgspec.ValidationError`; the host
treats that as a protocol error and ends that sandbox, never itself. No pickle anywhere.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from dynworkers.sandbox_policy.policy import Policy


class Message(msgspec.Struct, frozen=True, array_like=True, tag_field="t"):
    """Base of every message; subclasses set an integer `tag`."""


# --- errors as data -------------------------------------------------------------------------------

#: The closed list of error kinds a sandbox may report.
ERROR_KINDS = frozenset(
    {
        "tenant",  # tenant code raised
        "entrypoint",  # no such entrypoint class or method
        "result",  # the result is not plain data, or is over the size budget
        "specialise",  # the tenant's modules failed at import time
        "protocol",  # the sandbox received something it cannot handle
        "internal",  # a bug in the sandbox loop itself
        "capability",  # (host to sandbox) a binding call outside the capability table
        "binding",  # (host to sandbox) the host's binding code raised
        "rate_limit",  # (host to sandbox) the tenant's binding calls exceeded its rate
    }
)

#: Builtin exception types a host binding may raise that reach the tenant as that type (a
#: subclass of it and of `workers.BindingError`) with their message: an error of kind "binding"
#: whose `type_name` is one of these. Any other exception from host code reaches the tenant as a
#: plain `BindingError` (runtime.bindings.binding_failure decides what it says).
HOST_ERROR_TYPES = frozenset(
    {
        "ValueError",
        "TypeError",
        "KeyError",
        "IndexError",
        "LookupError",
        "PermissionError",
        "TimeoutError",
        "ConnectionError",
        "NotImplementedError",
        "ArithmeticError",
        "ZeroDivisionError",
    }
)


class ErrorInfo(msgspec.Struct, frozen=True, array_like=True):
    kind: str
    type_name: str
    message: str
    #: The tenant's own traceback lines; never a host or runtime frame.
    traceback: list[str] = []


# --- host -> sandbox ------------------------------------------------------------------------------


class ModuleCode(msgspec.Struct, frozen=True, array_like=True):
    name: str
    source: str
    #: `marshal` of the code object the host compiled under the policy.
    code: bytes


class EnvEntry(msgspec.Struct, frozen=True, array_like=True):
    name: str
    #: "data" (value is msgpack of plain data) or a binding kind ("kv", "service", ...).
    kind: str
    value: bytes = b""
    #: Capability id in this sandbox's table (bindings only).
    capability: int = 0
    methods: list[str] = []


class Welcome(Message, frozen=True, tag=1):
    """The host accepted the sandbox's Hello; it may confine itself and report Ready."""


class Specialise(Message, frozen=True, tag=2):
    tenant_id: str
    main_module: str
    modules: list[ModuleCode]
    env: list[EnvEntry]
    #: Capability id of the outbound fetch handler, 0 when the tenant has none.
    outbound: int = 0


class Grant(msgspec.Struct, frozen=True, array_like=True):
    """A binding passed as a call argument: granted for that call only, then revoked."""

    #: Index of the positional argument it replaces (sent as nil in `args`).
    position: int
    #: The binding; its `value` is msgpack of the data the binding hands over with itself.
    entry: EnvEntry


class Invoke(Message, frozen=True, tag=3):
    request_id: int
    entrypoint: str | None
    method: str
    #: msgpack of the positional arguments (a list of plain data).
    args: bytes
    #: msgpack of the entrypoint's props (plain data or nil).
    props: bytes = b"\xc0"
    grants: list[Grant] = []


class BindingReply(Message, frozen=True, tag=4):
    request_id: int
    ok: bool
    #: msgpack of the result when ok.
    value: bytes = b"\xc0"
    error: ErrorInfo | None = None


ToSandbox = Welcome | Specialise | Invoke | BindingReply


# --- sandbox -> host ------------------------------------------------------------------------------


class Hello(Message, frozen=True, tag=20):
    token: bytes
    pid: int


class Ready(Message, frozen=True, tag=21):
    active_layers: list[str]
    #: (layer, reason) for each hardening layer asked for but unavailable.
    unavailable: list[tuple[str, str]] = []


class Specialised(Message, frozen=True, tag=22):
    error: ErrorInfo | None = None


class Returned(Message, frozen=True, tag=23):
    request_id: int
    #: msgpack of plain data; for fetch, of a `ResponseData`.
    value: bytes


class Failed(Message, frozen=True, tag=24):
    request_id: int
    error: ErrorInfo


class BindingCall(Message, frozen=True, tag=25):
    #: 0 for a notification: the host serves it and sends no reply.
    request_id: int
    capability: int
    method: str
    args: bytes


class Log(Message, frozen=True, tag=26):
    level: str
    message: str
    timestamp: float


FromSandbox = Hello | Ready | Specialised | Returned | Failed | BindingCall | Log


class ResponseData(msgspec.Struct, frozen=True, array_like=True):
    """A tenant's `Response`, as plain data."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class RequestData(msgspec.Struct, frozen=True, array_like=True):
    """A request handed to a tenant's fetch, or sent by a tenant to its outbound handler."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes


# --- host <-> zygote ------------------------------------------------------------------------------


class ZygoteInit(msgspec.Struct, frozen=True):
    """The zygote's first frame (JSON): the policy, and a warm-up worker compiled under it."""

    policy: Policy
    #: A harmless worker each spare runs once before it is ready, so that the copy-on-write
    #: faults of a first specialisation and a first call are paid off the cold path.
    warmup: list[ModuleCode] = []


class ForkRequest(Message, frozen=True, tag=40):
    sandbox_id: int
    endpoint: str
    token: bytes


class Kill(Message, frozen=True, tag=41):
    sandbox_id: int


class ZygoteReady(Message, frozen=True, tag=50):
    pid: int
    #: hardening layers the zygote could prepare, and the reasons for the others
    unavailable: list[tuple[str, str]] = []


class Forked(Message, frozen=True, tag=51):
    sandbox_id: int
    pid: int


class Exited(Message, frozen=True, tag=52):
    sandbox_id: int
    pid: int
    #: raw wait status and its reading ("killed by SIGKILL (out of memory?)")
    status: int
    description: str


ToZygote = ForkRequest | Kill
FromZygote = ZygoteReady | Forked | Exited


# --- codecs, built once ---------------------------------------------------------------------------

encoder = msgspec.msgpack.Encoder()
to_sandbox = msgspec.msgpack.Decoder(ToSandbox)
from_sandbox = msgspec.msgpack.Decoder(FromSandbox)
to_zygote = msgspec.msgpack.Decoder(ToZygote)
from_zygote = msgspec.msgpack.Decoder(FromZygote)
response_data = msgspec.msgpack.Decoder(ResponseData)
request_data = msgspec.msgpack.Decoder(RequestData)
plain = msgspec.msgpack.Decoder()

encode = encoder.encode


def decode_plain(data: bytes) -> Any:
    """Decode msgpack into builtins only (dict, list, str, bytes, int, float, bool, None)."""
    return plain.decode(data)


#: Bytes a frame may carry beyond the policy's result budget: the message around a result.
FRAME_SLACK = 1 << 20


def frame_limit(max_result_bytes: int) -> int:
    """The largest frame either end of a sandbox channel sends or accepts.

    The host sets it as the socket's MAXMSGSIZE (a bigger frame would be dropped by ZeroMQ, and
    the caller would wait its whole deadline); the sandbox checks every frame against it before
    sending and answers with a typed error naming the size and the limit instead.
    """
    return max_result_bytes + FRAME_SLACK


_LENGTH = struct.Struct(">I")


def frame(message: Message) -> bytes:
    """One length-prefixed frame for the zygote pipes."""
    body = encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove every complete frame from `buffer` and return their bodies."""
    frames = []
    while len(buffer) >= 4:
        (size,) = _LENGTH.unpack_from(buffer)
        if len(buffer) < 4 + size:
            break
        frames.append(bytes(buffer[4 : 4 + size]))
        del buffer[: 4 + size]
    return frames
