"""A stand-in for a language model, so that the agent example runs offline and answers the same
way every time. A real tenant would call its model through an outbound `fetch`.

Like a real model API it is sometimes busy: the first two calls of a session fail with
`ModelBusy`, later calls succeed. It counts calls in the tenant's KV (passed in as `kv`), which
lives on the host, so the count survives the sandbox being evicted between retries.
"""

#: How many calls of a session fail before the model answers.
BUSY_CALLS = 2


class ModelBusy(Exception):
    """The model is rate-limited; try again later."""


def complete(kv, session, prompt):
    """The model's answer to `prompt`; `session` groups the calls of one agent run."""
    key = "model-calls:" + session
    calls = (kv.get(key) or 0) + 1
    kv.put(key, calls)
    if calls <= BUSY_CALLS:
        raise ModelBusy(f"model busy (call {calls} of session {session}), try again")
    return "[" + prompt + "]"
