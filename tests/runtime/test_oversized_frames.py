"""A reply or a binding call over the channel's frame limit fails at once with a typed error
naming the size and the limit; it is never dropped to leave the caller waiting out its deadline.
Error messages and tracebacks are capped in the sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.runtime import SpecialiseError, Supervisor, TenantError
from dynworkers.runtime.sandbox.tenant import MAX_ERROR_MESSAGE_CHARS, MAX_TRACEBACK_FRAMES
from tests.runtime.support import load
from tests.tenants import attack_oversize, basic

#: Long enough that a dropped frame shows up as SandboxTimeout, not as a slow pass.
DEADLINE = 20.0


def test_an_error_message_over_the_frame_limit_is_capped_and_arrives(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(deadline=DEADLINE)) as sup:
            stub = await load(
                sup, "big-error", attack_oversize.OVERSIZED, env={"KV": sup.kv("data")}
            )
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().huge_error(attack_oversize.OVER_FRAME)
            error = caught.value
            assert error.type_name == "ValueError"
            assert len(error.message) < MAX_ERROR_MESSAGE_CHARS + 100
            assert "more characters cut" in error.message
            # the sandbox is still good for the next call
            assert await stub.get_entrypoint().small_binding_call() == "small"

    asyncio.run(main())


def test_a_deep_traceback_keeps_only_the_most_recent_frames(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(deadline=DEADLINE)) as sup:
            stub = await load(sup, "deep-error", attack_oversize.OVERSIZED)
            with pytest.raises(TenantError) as caught:
                await stub.get_entrypoint().deep_error(400)
            frames = [line for line in caught.value.traceback if line.strip().startswith("File")]
            assert len(frames) == MAX_TRACEBACK_FRAMES
            assert any("earlier frames not shown" in line for line in caught.value.traceback)

    asyncio.run(main())


def test_a_binding_call_over_the_frame_limit_raises_payload_too_large_in_the_tenant(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(deadline=DEADLINE)) as sup:
            stub = await load(
                sup, "big-call", attack_oversize.OVERSIZED, env={"KV": sup.kv("data")}
            )
            message = await stub.get_entrypoint().huge_binding_call(attack_oversize.OVER_FRAME)
            assert "frame limit" in message
            limit = sup.config.policy.max_result_bytes + (1 << 20)
            assert str(limit) in message
            assert await stub.get_entrypoint().small_binding_call() == "small"

    asyncio.run(main())


def test_an_import_error_over_the_frame_limit_is_a_specialise_error(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(deadline=DEADLINE)) as sup:
            stub = await load(sup, "big-import", attack_oversize.OVERSIZED_AT_IMPORT)
            with pytest.raises(SpecialiseError, match="more characters cut"):
                await stub.get_entrypoint().anything()
            other = await load(sup, "bystander", basic.GREETER)
            assert await other.get_entrypoint("Greeter").ping() == "pong"

    asyncio.run(main())
