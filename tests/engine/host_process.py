"""A real host process for the crash-recovery test: `python -m tests.engine.host_process`.

`start DIR N STEPS [DURABILITY]`: start a Supervisor and an Engine (durability "full" unless
given) on DIR, create N instances of the COUNTER tenant (STEPS steps each, a short sleep between
steps) and run until killed.
`resume DIR`: start again on DIR, wait until every instance is finished, print a JSON report
(statuses, outputs, and how many times each step body ran, counted in the tenant's KV).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from dynworkers.runtime import SupervisorConfig
from tests.engine.harness import Harness
from tests.tenants import workflows as programs


def config(state: str) -> SupervisorConfig:
    # one sandbox for the tenant, so that at most one attempt is in flight when it is killed
    return SupervisorConfig(
        state_dir=Path(state),
        spares=1,
        max_sandboxes=4,
        deadline=10.0,
        max_sandboxes_per_tenant=1,
    )


async def start(state: str, count: int, steps: int, durability: str = "full") -> None:
    async with Harness(config(state), durability=durability) as h:
        h.deploy("acme", programs.COUNTER)
        envelope = {"__dispatcherMetadata": {"tenant_id": "acme"}}
        params = {"steps": steps, "sleep_each": 20}
        items = [(f"i{n}", {**envelope, "params": params}) for n in range(count)]
        await h.engine.create(h.workflow.name, items, tenant="acme")
        print("created", flush=True)
        await asyncio.Event().wait()  # run until killed


async def resume(state: str) -> None:
    async with Harness(config(state)) as h:
        h.deploy("acme", programs.COUNTER)
        records = await h.engine.store.list_instances(limit=10_000)
        report = {}
        for record in records:
            status = await h.wait_for(record.id, "complete", "errored", timeout=60)
            report[record.id] = status
        kv = h.supervisor.kv("kv").store
        ran = {key: kv.get("acme@v1", "kv", key) for key in kv.list("acme@v1", "kv", "ran:")}
        print(json.dumps({"instances": report, "ran": ran}), flush=True)


if __name__ == "__main__":
    mode, state = sys.argv[1], sys.argv[2]
    if mode == "start":
        asyncio.run(start(state, int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6]))
    else:
        asyncio.run(resume(state))
