"""Attack class: flood the host with binding calls (an RPC flood: 33,000 calls in 5 s was seen).
The defence: a token bucket per tenant on binding calls; a call over it raises
`workers.RateLimited` in the tenant and is counted in the supervisor's stats."""

FLOOD = """
from workers import WorkerEntrypoint, RateLimited


class Default(WorkerEntrypoint):
    def flood(self, calls):
        done = 0
        for n in range(calls):
            try:
                self.env.KV.get("k")
            except RateLimited as exc:
                return {"done": done, "refused": str(exc)}
            done += 1
        return {"done": done, "refused": None}

    def one(self):
        return self.env.KV.get("k")
"""
