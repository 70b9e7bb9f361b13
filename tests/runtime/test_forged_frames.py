"""A compromised sandbox writing its own frames (simulated with `Policy.trusted()` code that owns
its ZeroMQ socket): the host judges every frame by the channel it came on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dynworkers.runtime import ProtocolError, SandboxError, Supervisor
from dynworkers.sandbox_policy import Policy
from tests.runtime.support import evictions, load
from tests.tenants import attack_forged_frames, basic


def test_forged_binding_call_outside_the_capability_table_is_refused(
    config: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with Supervisor(config(policy=Policy.trusted())) as sup:
            kv = sup.kv("ns")
            victim = await load(sup, "victim", attack_forged_frames.FORGER, env={"KV": kv})
            forger = await load(sup, "forger", attack_forged_frames.FORGER, env={"KV": kv})
            await victim.get_entrypoint().put("balance", 100)
            attempts = [
                (2, "put", ["balance", 0]),  # a capability id this sandbox was never granted
                (99, "get", ["balance"]),
                (0, "get", ["balance"]),
                (1, "drop_table", []),  # a granted capability, a method it does not offer
                (1, "store", []),  # an attribute of the host binding, not a method it offers
            ]
            for capability, method, args in attempts:
                reply = await forger.get_entrypoint().forge(capability, method, args)
                assert reply["ok"] is False, (capability, method, reply)
                assert reply["kind"] == "capability", (capability, method, reply)
            # Its own granted capability reaches only its own rows, whatever it claims.
            own = await forger.get_entrypoint().forge(1, "put", ["balance", 0])
            assert own == {"ok": True, "value": None}
            assert await forger.get_entrypoint().get("balance") == 0
            assert await victim.get_entrypoint().get("balance") == 100
            assert await forger.get_entrypoint().ping() == "pong"  # refused, not ended

    asyncio.run(main())


def test_forged_call_from_a_tenant_without_bindings_is_refused(config: Callable[..., Any]) -> None:
    async def main() -> None:
        async with Supervisor(config(policy=Policy.trusted())) as sup:
            victim = await load(
                sup, "victim", attack_forged_frames.FORGER, env={"KV": sup.kv("ns")}
            )
            await victim.get_entrypoint().put("secret", "s3cr3t")
            forger = await load(sup, "forger", attack_forged_frames.FORGER)
            reply = await forger.get_entrypoint().forge(1, "get", ["secret"])
            assert reply["ok"] is False and reply["kind"] == "capability"
            assert "s3cr3t" not in reply["message"]
            assert await victim.get_entrypoint().get("secret") == "s3cr3t"

    asyncio.run(main())


@pytest.mark.parametrize("attack", ["garbage", "hello_again"])
def test_undecodable_or_out_of_turn_frame_ends_that_sandbox_only(
    config: Callable[..., Any], attack: str
) -> None:
    async def main() -> None:
        async with Supervisor(config(policy=Policy.trusted())) as sup:
            bystander = await load(sup, "bystander", basic.GREETER)
            await bystander.get_entrypoint("Greeter").ping()
            bystander_pid = sup.sandbox_pid("bystander")
            forger = await load(sup, "forger", attack_forged_frames.FORGER)
            await forger.get_entrypoint().ping()
            with pytest.raises(SandboxError) as caught:
                await getattr(forger.get_entrypoint(), attack)()
            assert isinstance(caught.value, ProtocolError)
            assert caught.value.tenant_id == "forger"
            assert evictions(sup, "protocol") == 1
            assert sup.sandbox_pid("forger") is None
            assert await bystander.get_entrypoint("Greeter").ping() == "pong"
            assert sup.sandbox_pid("bystander") == bystander_pid
            assert await forger.get_entrypoint().ping() == "pong"  # rehydrated, clean

    asyncio.run(main())
