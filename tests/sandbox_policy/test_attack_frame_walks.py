"""Attack class: reaching frames (and through them globals and builtins) from tenant code."""

from __future__ import annotations

import pytest

from dynworkers.sandbox_policy.errors import SourceRejected
from tests.sandbox_policy.tenant_harness import run

GEN_FRAME_ATTR = """
def gen():
    yield 1
g = gen()
frame = g.gi_frame
"""

GEN_FRAME_GETATTR = """
def gen():
    yield 1
g = gen()
frame = getattr(g, "gi_" + "frame")
"""

GEN_CODE_GETATTR = """
def gen():
    yield 1
code = getattr(gen(), "gi_code")
"""

TRACEBACK_DUNDER = """
try:
    1 / 0
except ZeroDivisionError as e:
    tb = e.__traceback__
"""

TRACEBACK_GETATTR = """
try:
    1 / 0
except ZeroDivisionError as e:
    tb = getattr(e, "__traceback__")
"""

WITH_TRACEBACK = """
try:
    1 / 0
except ZeroDivisionError as e:
    m = e.with_traceback
"""

F_BACK_CHAIN = """
def gen():
    yield 1
g = gen()
f = getattr(getattr(g, "gi_frame"), "f_back")
"""

F_GLOBALS_STATIC = """
def f(frame):
    return frame.f_globals
"""

TB_FRAME_STATIC = """
def f(tb):
    return tb.tb_frame.f_back
"""

FUNCTION_GLOBALS = """
def f():
    pass
g = getattr(f, "func_globals")
"""

FUNCTION_ATTRIBUTES_DENIED = """
def f():
    pass
n = getattr(f, "name", None)
"""

GENERATOR_PROTOCOL = """
def gen():
    x = yield 1
    yield x * 2
g = gen()
first = next(g)
second = g.send(21)
g.close()
"""


def test_gi_frame_attribute_is_refused_at_compile_time():
    with pytest.raises(SourceRejected, match="gi_frame"):
        run(GEN_FRAME_ATTR)


def test_gi_frame_through_getattr_is_refused():
    with pytest.raises(AttributeError, match="gi_frame"):
        run(GEN_FRAME_GETATTR)


def test_gi_code_through_getattr_is_refused():
    with pytest.raises(AttributeError, match="gi_code"):
        run(GEN_CODE_GETATTR)


def test_exception_traceback_dunder_is_refused_at_compile_time():
    with pytest.raises(SourceRejected, match="__traceback__"):
        run(TRACEBACK_DUNDER)


def test_exception_traceback_through_getattr_is_refused():
    with pytest.raises(AttributeError, match="private"):
        run(TRACEBACK_GETATTR)


def test_with_traceback_is_not_readable():
    with pytest.raises(AttributeError, match="with_traceback"):
        run(WITH_TRACEBACK)


def test_f_back_chain_is_refused():
    with pytest.raises(AttributeError):
        run(F_BACK_CHAIN)


def test_f_globals_is_refused_at_compile_time():
    with pytest.raises(SourceRejected, match="f_globals"):
        run(F_GLOBALS_STATIC)


def test_tb_frame_and_f_back_are_both_reported():
    with pytest.raises(SourceRejected) as info:
        run(TB_FRAME_STATIC)
    messages = " ".join(p[2] for p in info.value.problems)
    assert "tb_frame" in messages and "f_back" in messages


def test_function_internals_are_refused():
    with pytest.raises(AttributeError, match="func_globals"):
        run(FUNCTION_GLOBALS)


def test_function_objects_expose_no_attributes():
    with pytest.raises(AttributeError, match="function"):
        run(FUNCTION_ATTRIBUTES_DENIED)


def test_generator_send_and_close_still_work():
    ns = run(GENERATOR_PROTOCOL)
    assert (ns["first"], ns["second"]) == (1, 42)
