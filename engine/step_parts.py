"""The parts of a `step.do` call beyond its body: the context a body may take, step functions that
other steps depend on (the Python Workflows DAG), rollbacks, and a retry delay given as a function.

Runs inside a tenant's sandbox (and in a host worker thread for host-side workflows), beside
engine.replay; imports nothing from the host side. Pure bookkeeping: nothing here talks to the
host; `Step` does, and calls these.

- `StepContext`: what a step body receives when it takes a parameter (`ctx.attempt`,
  `ctx.step.name`, `ctx.step.count`, `ctx.config`), as Cloudflare's step callbacks do.
- `StepFunction`: what `@step.do(name, depends=[a, b], concurrent=...)` returns. Calling it runs
  its dependencies first (each at most once per execution: a step function remembers its result),
  then the step with their results as arguments. A sandbox runs tenant code on one thread, so
  `concurrent=True` dependencies run one after another, in the order listed; each keeps its own
  identity (name and occurrence), so replay is unaffected by the order.
- Rollbacks: `step.do(name, fn, rollback=undo)` registers `undo` with the step's result once the
  step has a result (fresh or replayed); on a failure of `run()` (or `terminate(rollback=True)`),
  they run in reverse order, each as a durable step of its own named `rollback <name>`.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

from dynworkers.engine import rules
from dynworkers.sandbox_policy import aio
from dynworkers.sandbox_policy.namespace import register_safe_type

#: the prefix of the durable step a rollback runs as
ROLLBACK_PREFIX = "rollback "


@register_safe_type
class StepInfo:
    """`ctx.step`: the step's `name` and `count`, the occurrence of that name (from 1)."""

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count


@register_safe_type
class StepContext:
    """What a step body receives: `attempt` (from 1), `step` (`name`, `count`), `config`."""

    def __init__(self, attempt: int, name: str, count: int, config: dict[str, Any]) -> None:
        self.attempt = attempt
        self.step = StepInfo(name, count)
        self.config = config

    def __getitem__(self, key: str) -> Any:  # ctx["attempt"], as the dict Cloudflare passes
        if key in ("attempt", "config"):
            return getattr(self, key)
        if key == "step":
            return {"name": self.step.name, "count": self.step.count}
        raise KeyError(key)


def positional_parameters(fn: Callable[..., Any], required: bool = False) -> int | None:
    """How many positional arguments `fn` takes at most (None: any number, or unknown); with
    `required`, how many it needs (parameters without a default: `lambda i=i: i` needs none)."""
    if type(fn) is types.FunctionType and not fn.__dict__:
        # a plain function (no __wrapped__ or __signature__ to follow): its code says it, with
        # none of inspect.signature's cost, which was a sixth of a sandbox's work per step
        code = fn.__code__
        if code.co_flags & inspect.CO_VARARGS and not required:
            return None
        return code.co_argcount - (len(fn.__defaults__ or ()) if required else 0)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind == parameter.VAR_POSITIONAL:
            return count if required else None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            if required and parameter.default is not parameter.empty:
                continue
            count += 1
    return count


def call_body(fn: Callable[..., Any], args: list[Any], ctx: StepContext) -> Any:
    """Call a step body with its dependencies' results, and the context if it needs one more
    argument (a parameter with a default, as in `lambda i=i: ...`, is left alone)."""
    needed = positional_parameters(fn, required=True)
    if needed is not None and needed > len(args):
        return fn(*args, ctx)
    return fn(*args)


def split_delay(config: Any) -> tuple[Any, Callable[..., Any] | None]:
    """A step config whose retry `delay` is a function: the config with a placeholder delay
    (frozen and recorded as usual), and the function, called at each retry."""
    if not isinstance(config, dict):
        return config, None
    retries = config.get("retries")
    if not isinstance(retries, dict) or not callable(retries.get("delay")):
        return config, None
    return {**config, "retries": {**retries, "delay": 0}}, retries["delay"]


def delay_ms(delay: Callable[..., Any], attempt: int, error: BaseException) -> int:
    """The retry delay a tenant's function gives for `attempt` (1 = the first failure)."""
    room = positional_parameters(delay)
    value = delay(attempt, error) if room is None or room >= 2 else delay(attempt)
    return rules.duration_ms(value, "the retry delay function's result")


@register_safe_type
class StepFunction:
    """A decorated step: call it to run it (once per execution); other steps may depend on it."""

    def __init__(
        self,
        step: Any,
        name: str,
        body: Callable[..., Any],
        config: Any,
        rollback: Callable[..., Any] | None,
        depends: list[Any],
        concurrent: bool,
    ) -> None:
        self._step = step
        self.name = name
        self._body = body
        self._config = config
        self._rollback = rollback
        self._depends = depends
        self.concurrent = concurrent
        self._done = False
        self._value: Any = None

    def __call__(self) -> Any:
        """The step's result (awaitable inside an `async def` workflow)."""
        return aio.ready(self.result())

    def result(self) -> Any:
        if self._done:
            return self._value
        args = [dependency.result() for dependency in self._depends]
        value = self._step._run_do(self.name, self._body, self._config, self._rollback, args)
        self._done, self._value = True, value
        return value


def check_depends(depends: Any) -> list[Any]:
    if depends is None:
        return []
    if not isinstance(depends, (list, tuple)):
        raise TypeError("depends is a list of step functions made by @step.do")
    for dependency in depends:
        if not isinstance(dependency, StepFunction):
            raise TypeError(
                f"depends takes the step functions made by @step.do, got "
                f"{type(dependency).__name__}"
            )
    return list(depends)


def call_rollback(undo: Callable[..., Any], value: Any, ctx: StepContext) -> Any:
    """A rollback receives the step's result (and the context, if it takes a second argument)."""
    room = positional_parameters(undo)
    if room == 0:
        return undo()
    if room is None or room >= 2:
        return undo(value, ctx)
    return undo(value)
