"""Attack class: async code. Coroutines, async generators, the loop's awaitables and the vetted
asyncio must not lead to frames, code, the loop, or control flow the tenant may not touch; the
async variant of each other attack class (frame walks, format strings, dunders, imports,
BaseException, bombs) is here."""

from __future__ import annotations

import pytest

from dynworkers.sandbox_policy import aio
from dynworkers.sandbox_policy.errors import SourceRejected
from tests.sandbox_policy.tenant_harness import Tenant, run, run_async

# Attack programs leave coroutines they made un-awaited; that warning is expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]


def _refused(source: str, call: str = "attempt") -> str:
    """Compile and call; the refusal (at compile time or at run time) as text."""
    try:
        module = run(source)
    except SourceRejected as exc:
        return f"compile: {exc}"
    try:
        result = module[call]()  # type: ignore[operator]
    except AttributeError as exc:
        return f"run: {exc}"
    if aio.is_awaitable(result):
        return str(aio.block_on(result))
    raise AssertionError(f"not refused; got {result!r}")


# frame walks ------------------------------------------------------------------------------------

COROUTINE_INTERNALS = [
    "c.cr_frame",
    "c.cr_code",
    "c.cr_await",
    "c.cr_origin",
    "c.cr_running",
    "getattr(c, 'cr_' + 'frame')",
    "c.send(None)",
    "c.throw(ValueError)",
    "c.close()",
    "type(c).send(c, None)",
    "getattr(type(c), 'throw')",
    "a.ag_frame",
    "a.ag_code",
    "a.ag_await",
    "a.asend(None)",
    "a.athrow(ValueError)",
    "a.aclose()",
    "getattr(a, 'ag_' + 'frame')",
]


@pytest.mark.parametrize("expression", COROUTINE_INTERNALS)
def test_coroutine_and_async_generator_internals_are_unreachable(expression: str) -> None:
    source = f"""
async def target():
    return 1

async def agen():
    yield 1

def attempt():
    c = target()
    a = agen()
    return {expression}
"""
    refusal = _refused(source)
    assert "not accessible" in refusal or "restricted name" in refusal, refusal


LOOP_OBJECTS = [
    "asyncio.sleep(0).set_result",
    "getattr(asyncio.sleep(0), 'set_error')",
    "asyncio.create_task(target()).set_result",
    "getattr(asyncio.create_task(target()), 'coro')",
    "self_gather.cr_frame",
    "asyncio.sleep.func_globals",
    "getattr(asyncio.gather, 'cr_code')",
]


@pytest.mark.parametrize("expression", LOOP_OBJECTS)
def test_the_loops_awaitables_and_asyncio_functions_expose_nothing(expression: str) -> None:
    source = f"""
import asyncio

async def target():
    return 1

async def main():
    self_gather = asyncio.gather()
    try:
        return {expression}
    except AttributeError as exc:
        return "refused: " + str(exc)
"""
    result = _refused(source, "main")
    assert result.startswith(("refused: ", "compile: ")), result
    assert "not accessible" in result or "restricted name" in result, result


def test_a_binding_result_cannot_be_resolved_by_the_tenant() -> None:
    pending = aio.Pending()
    tenant = Tenant()
    module = tenant.run(
        "def forge(p):\n    p.set_result('forged')\n",
    )
    with pytest.raises(AttributeError, match="not accessible"):
        module["forge"](pending)  # type: ignore[operator]
    assert repr(pending) == "<pending>"


# format strings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    ["'{0.cr_frame}'.format(c)", "'{0.cr_code.co_consts}'.format(c)", "'{0[0]}'.format(c)"],
)
def test_format_strings_cannot_walk_into_a_coroutine(template: str) -> None:
    source = f"""
async def target():
    return 1

def attempt():
    c = target()
    return {template}
"""
    with pytest.raises((ValueError, SourceRejected), match=r"not allowed|restricted name"):
        run(source)["attempt"]()  # type: ignore[operator]


def test_an_f_string_attribute_on_a_coroutine_is_guarded() -> None:
    source = """
async def target():
    return 1

async def main():
    c = target()
    try:
        return f"{getattr(c, 'cr_frame')}"
    except AttributeError as exc:
        return "refused"
"""
    assert run_async(source) == "refused"


# dunders: the async protocols cannot be implemented by tenant classes -----------------------------


@pytest.mark.parametrize(
    "dunder", ["__await__", "__aiter__", "__anext__", "__aenter__", "__aexit__"]
)
def test_tenant_classes_cannot_define_the_async_protocols(dunder: str) -> None:
    source = f"""
class Sneaky:
    def {dunder}(self):
        return iter([1])
"""
    with pytest.raises(SourceRejected, match="starts with"):
        run(source)


@pytest.mark.parametrize("call", ["c.__await__()", "a.__anext__()", "a.__aiter__()"])
def test_the_async_protocols_cannot_be_called_by_name(call: str) -> None:
    source = f"""
async def target():
    return 1

async def agen():
    yield 1

c = target()
a = agen()
x = {call}
"""
    with pytest.raises(SourceRejected):
        run(source)


def test_awaiting_a_plain_generator_is_a_type_error() -> None:
    source = """
def gen():
    yield 1

async def main():
    try:
        await gen()
    except TypeError as exc:
        return "refused"
"""
    assert run_async(source) == "refused"


def test_unpacking_in_async_for_goes_through_the_guard() -> None:
    source = """
async def pairs():
    yield (1, 2)
    yield (3, 4)

async def main():
    out = []
    async for a, b in pairs():
        out.append(a + b)
    return out + [x async for x in pairs()]
"""
    assert run_async(source) == [3, 7, (1, 2), (3, 4)]


def test_unpacking_targets_in_async_comprehensions_are_refused() -> None:
    with pytest.raises(SourceRejected, match="async comprehension"):
        run("async def f(g):\n    return [a async for a, b in g()]\n")


# imports ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "from asyncio import get_event_loop",
        "from asyncio import run",
        "from asyncio import events",
        "import asyncio.events",
        "from asyncio import Future",
    ],
)
def test_asyncio_offers_only_its_vetted_members(statement: str) -> None:
    with pytest.raises(ImportError):
        run(statement)


# BaseException: control flow the tenant must not swallow ---------------------------------------


class HostSuspend(BaseException):
    """Stands in for a workflow's Suspend."""


def _suspend() -> None:
    raise HostSuspend("hibernate")


SWALLOWERS = [
    """
async def main():
    try:
        await work()
    except Exception:
        return "swallowed"
""",
    """
import asyncio
async def main():
    return await asyncio.gather(work(), return_exceptions=True)
""",
    """
import asyncio
async def main():
    try:
        return await asyncio.wait_for(work(), 5)
    except Exception:
        return "swallowed"
""",
    """
import asyncio
async def main():
    task = asyncio.create_task(work())
    try:
        await task
    except Exception:
        return "swallowed"
""",
]


@pytest.mark.parametrize("source", SWALLOWERS)
def test_a_host_suspension_crosses_every_async_construct(source: str) -> None:
    tenant = Tenant()
    module = tenant.run("async def work():\n    suspend()\n" + source)
    module["suspend"] = _suspend
    with pytest.raises(HostSuspend):
        aio.block_on(module["main"]())  # type: ignore[operator]


def test_cancelled_error_is_an_ordinary_exception_here() -> None:
    source = """
import asyncio

async def stubborn():
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        return "kept running"

async def main():
    try:
        await asyncio.wait_for(stubborn(), 0.01)
    except asyncio.TimeoutError:
        return "timed out"
"""
    assert run_async(source) == "timed out"


# bombs ------------------------------------------------------------------------------------------


def test_unbounded_await_recursion_is_a_recursion_error() -> None:
    source = """
async def deeper(n):
    return await deeper(n + 1)

async def main():
    try:
        await deeper(0)
    except RecursionError:
        return "stopped"
"""
    assert run_async(source) == "stopped"


def test_tasks_waiting_on_each_other_fail_instead_of_hanging() -> None:
    source = """
import asyncio

box = {}

async def a():
    return await box["b"]

async def b():
    await asyncio.sleep(0)
    return await box["a"]

async def main():
    box["a"] = asyncio.create_task(a())
    box["b"] = asyncio.create_task(b())
    return await box["a"]
"""
    with pytest.raises(RuntimeError, match="nothing can make progress"):
        run_async(source)


def test_asyncio_outside_a_coroutine_is_refused() -> None:
    with pytest.raises(RuntimeError, match="async def"):
        run("import asyncio\nasyncio.sleep(1)\n")
