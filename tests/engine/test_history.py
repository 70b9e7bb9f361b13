"""An instance's history: each step with its attempts, sleeps, waits, events and operations, as
the engine, the tenant's binding and the control API show it. Real sandboxes, a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dynworkers.engine import ManualClock
from tests.engine.harness import Harness
from tests.tenants import workflows as programs


def test_history_shows_attempts_sleeps_waits_events_and_operations(
    config: Callable[..., Any],
) -> None:
    clock = ManualClock()

    async def main() -> None:
        async with Harness(config(), clock=clock) as h:
            h.deploy("acme", programs.STORY)
            envelope = {"__dispatcherMetadata": {"tenant_id": "acme"}, "params": {}}
            (instance,) = await h.engine.create(
                "dynamic-workflow", [("story", envelope)], tenant="acme"
            )
            for _ in range(300):  # two retries of "build", one of "token", then the sleep
                status = await h.engine.status(instance)
                record = await h.engine.record(instance)
                if record.wake_at is not None and record.wake_at - clock.now() > 30:
                    break
                if status["status"] == "waiting":
                    clock.advance(1)
                await asyncio.sleep(0.02)
            clock.advance(61)
            await h.wait_for(instance, "waiting")
            while (await h.engine.record(instance)).waiting_for != "approval":
                await asyncio.sleep(0.02)
            await h.engine.pause(instance)
            await h.engine.resume(instance)
            await h.engine.send_event(instance, "approval", {"by": "ana"})
            await h.wait_for(instance, "complete")

            view = await h.engine.history(instance)
            steps = {s["name"]: s for s in view["steps"]}
            build = steps["build"]
            assert [a["outcome"] for a in build["attempts"]] == ["retry", "retry", "complete"]
            assert build["attempts"][0]["error"] == {
                "name": "ConnectionError",
                "message": "the registry timed out",
            }
            assert all(a["duration_ms"] is not None for a in build["attempts"])
            assert build["result_bytes"] == len(b"\xa5built")
            token = steps["token"]
            assert token["sensitive"] and token["result_bytes"] is None
            assert "abc123" not in str(token)  # the error message is redacted too
            assert steps["cool down"]["kind"] == "sleep"
            kinds = [e["kind"] for e in view["timeline"]]
            for kind in ("sleep", "wait", "paused", "resumed", "event sent", "event", "complete"):
                assert kind in kinds, (kind, kinds)
            assert kinds.index("wait") < kinds.index("event sent") < kinds.index("complete")

            # the tenant reads its own instance's history through its binding
            stub = await h.stub("acme")
            answer = await stub.fetch("http://acme/story")
            seen = answer.json()
            assert seen["id"] == "story" and seen["steps"][0]["name"] == "build"

    asyncio.run(main())
