"""The wire format: pinned bytes, strict decoders, unique tags."""

from __future__ import annotations

import msgspec
import pytest

from dynworkers.runtime import protocol as p

#: Golden encodings. A change here is a wire-format change: fields are appended with defaults,
#: never reordered or retyped, so an old peer still reads a new frame.
GOLDEN: list[tuple[p.Message, bytes]] = [
    (
        p.Invoke(
            request_id=7,
            entrypoint="Greeter",
            method="greet",
            args=b"\x92\x91\xa3bob\x80",
            props=b"\x81\xa1x\x01",
        ),
        b"\x97\x03\x07\xa7Greeter\xa5greet\xc4\x07\x92\x91\xa3bob\x80\xc4\x04\x81\xa1x\x01\x90",
    ),
    (
        p.Invoke(
            request_id=8,
            entrypoint="W",
            method="run",
            args=b"\x92\x92\x80\xc0\x80",
            grants=[
                p.Grant(
                    position=1,
                    entry=p.EnvEntry(
                        name="arg1", kind="step", value=b"\xc0", capability=3, methods=["wait"]
                    ),
                )
            ],
        ),
        b"\x97\x03\x08\xa1W\xa3run\xc4\x05\x92\x92\x80\xc0\x80\xc4\x01\xc0\x91\x92\x01"
        b"\x95\xa4arg1\xa4step\xc4\x01\xc0\x03\x91\xa4wait",
    ),
    (
        p.BindingCall(request_id=3, capability=2, method="get", args=b"\x92\x91\xa1k\x80"),
        b"\x95\x19\x03\x02\xa3get\xc4\x05\x92\x91\xa1k\x80",
    ),
    (
        p.BindingReply(
            request_id=3,
            ok=False,
            error=p.ErrorInfo(
                kind="capability", type_name="CapabilityError", message="no", traceback=["l1"]
            ),
        ),
        b"\x95\x04\x03\xc2\xc4\x01\xc0\x94\xaacapability\xafCapabilityError\xa2no\x91\xa2l1",
    ),
    (
        p.Failed(
            request_id=9, error=p.ErrorInfo(kind="tenant", type_name="ValueError", message="bad")
        ),
        b"\x93\x18\t\x94\xa6tenant\xaaValueError\xa3bad\x90",
    ),
    (
        p.Specialise(
            tenant_id="acme",
            main_module="main",
            modules=[p.ModuleCode(name="main", source="x = 1", code=b"\x00")],
            env=[p.EnvEntry(name="KV", kind="kv", capability=1, methods=["get"])],
            outbound=0,
        ),
        b"\x96\x02\xa4acme\xa4main\x91\x93\xa4main\xa5x = 1\xc4\x01\x00"
        b"\x91\x95\xa2KV\xa2kv\xc4\x00\x01\x91\xa3get\x00",
    ),
    (
        p.Log(level="info", message="hi", timestamp=1.5),
        b"\x94\x1a\xa4info\xa2hi\xcb?\xf8\x00\x00\x00\x00\x00\x00",
    ),
    (
        p.ForkRequest(sandbox_id=1, endpoint="ipc:///tmp/s1", token=b"\x01\x02"),
        b"\x94(\x01\xadipc:///tmp/s1\xc4\x02\x01\x02",
    ),
    (
        p.Exited(sandbox_id=4, pid=1234, status=9, description="killed by SIGKILL"),
        b"\x954\x04\xcd\x04\xd2\t\xb1killed by SIGKILL",
    ),
]

_DECODERS = {
    p.Invoke: p.to_sandbox,
    p.BindingReply: p.to_sandbox,
    p.Specialise: p.to_sandbox,
    p.BindingCall: p.from_sandbox,
    p.Failed: p.from_sandbox,
    p.Log: p.from_sandbox,
    p.ForkRequest: p.to_zygote,
    p.Exited: p.from_zygote,
}


def _all_messages() -> list[type[p.Message]]:
    found: list[type[p.Message]] = []
    pending = list(p.Message.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize(("message", "golden"), GOLDEN, ids=lambda v: type(v).__name__)
def test_message_encoding_matches_its_golden_bytes(message: p.Message, golden: bytes) -> None:
    assert p.encode(message) == golden


@pytest.mark.parametrize(("message", "golden"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_bytes_decode_back_to_the_same_message(message: p.Message, golden: bytes) -> None:
    assert _DECODERS[type(message)].decode(golden) == message


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\xff\x00garbage",
        b"\x93\x03\x07",  # Invoke with fields missing
        b"\x96\x03\xa1x\xa7Greeter\xa5greet\xc4\x00\xc4\x00",  # request_id is a str
        b"\x91\x63",  # an unknown tag
        b"\x96\x03\x07\xa7Greeter\xa5greet\xc4\x07\x92",  # truncated
        b'{"t": 3}',  # JSON, not msgpack
    ],
)
def test_to_sandbox_decoder_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        p.to_sandbox.decode(garbage)


@pytest.mark.parametrize(
    "garbage", [b"", b"\xc1", b"\x92\x19\x01", b"\x91\xcd\x01\x00", b"\xa5hello"]
)
def test_from_sandbox_decoder_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        p.from_sandbox.decode(garbage)


def test_a_decoder_refuses_messages_of_the_other_direction() -> None:
    hello = p.encode(p.Hello(token=b"t", pid=1))
    invoke = p.encode(p.Invoke(request_id=1, entrypoint=None, method="m", args=b"\x90"))
    with pytest.raises(msgspec.ValidationError):
        p.to_sandbox.decode(hello)
    with pytest.raises(msgspec.ValidationError):
        p.from_sandbox.decode(invoke)
    with pytest.raises(msgspec.ValidationError):
        p.to_zygote.decode(invoke)


def test_every_message_tag_is_unique() -> None:
    tags = [cls.__struct_config__.tag for cls in _all_messages()]
    assert all(isinstance(tag, int) for tag in tags)
    assert len(tags) == len(set(tags)), sorted(tags)


def test_every_message_is_frozen_array_like_and_tagged_by_t() -> None:
    for cls in _all_messages():
        config = cls.__struct_config__
        assert config.frozen and config.array_like, cls
        assert config.tag_field == "t", cls


def test_every_union_member_is_a_message() -> None:
    for union in (p.ToSandbox, p.FromSandbox, p.ToZygote, p.FromZygote):
        for member in union.__args__:
            assert issubclass(member, p.Message), member


def test_decode_plain_yields_builtins_only() -> None:
    value = p.decode_plain(p.encode({"a": [1, 2.5, "s", b"b", None, True]}))
    assert value == {"a": [1, 2.5, "s", b"b", None, True]}
    with pytest.raises(msgspec.DecodeError):
        p.decode_plain(b"\xc1")


def test_split_frames_keeps_a_partial_frame_for_later() -> None:
    first, second = p.frame(p.Kill(sandbox_id=1)), p.frame(p.Kill(sandbox_id=2))
    buffer = bytearray(first + second[:3])
    assert [p.to_zygote.decode(body) for body in p.split_frames(buffer)] == [p.Kill(sandbox_id=1)]
    assert buffer == second[:3]
    buffer += second[3:]
    assert [p.to_zygote.decode(body) for body in p.split_frames(buffer)] == [p.Kill(sandbox_id=2)]
    assert buffer == b""


def test_an_invoke_from_before_grants_still_decodes():
    """Invoke gained `grants` (appended, with a default): a six-field frame is still valid."""
    old = b"\x96\x03\x07\xa7Greeter\xa5greet\xc4\x07\x92\x91\xa3bob\x80\xc4\x04\x81\xa1x\x01"
    message = p.to_sandbox.decode(old)
    assert isinstance(message, p.Invoke) and message.grants == []
