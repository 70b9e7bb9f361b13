"""compile_module: every problem at once, size limits, and hostile source refused quickly."""

from __future__ import annotations

import types

import pytest

from dynworkers.sandbox_policy.compiler import compile_module
from dynworkers.sandbox_policy.errors import SourceRejected
from dynworkers.sandbox_policy.policy import Policy

#: Hostile source must be refused without hanging; a hang guard, not a timing assertion (timing
#: belongs in benchmarks/). Folding 10**10**10 or parsing without limits would blow past it.
pytestmark = pytest.mark.timeout(20)

POLICY = Policy.default()
# Hostile sources must not be stopped by the line-length check before they reach the parser.
WIDE = Policy.default().with_limits(max_line_chars=POLICY.max_module_bytes)


def rejected(source: object, policy: Policy = POLICY) -> list[tuple[str, int | None, str]]:
    with pytest.raises(SourceRejected) as info:
        compile_module(source, "tenant.py", policy)  # type: ignore[arg-type]
    return info.value.problems


def test_valid_source_compiles_to_a_code_object():
    code = compile_module("x = 1\n", "tenant.py", POLICY)
    assert isinstance(code, types.CodeType) and code.co_filename == "tenant.py"


def test_every_restricted_python_refusal_is_reported_with_its_line():
    source = "a = 1\nb = a._x\nc = 2\nexec('1')\ndef _f():\n    pass\n"
    problems = rejected(source)
    assert [p[1] for p in problems] == [2, 4, 5]
    assert all(p[0] == "tenant.py" for p in problems)
    assert "_x" in problems[0][2] and "Exec" in problems[1][2] and "_f" in problems[2][2]


def test_syntax_error_names_its_line():
    problems = rejected("x = 1\ny = (\n")
    assert problems[0][1] == 2 and "SyntaxError" in problems[0][2]


def test_async_def_and_await_compile():
    compile_module("async def f(g):\n    return await g()\n", "m.py", POLICY)


def test_await_outside_an_async_function_is_a_syntax_error():
    assert "SyntaxError" in rejected("def f():\n    await g()\n")[0][2]


def test_non_str_source_is_refused():
    assert "must be str" in rejected(b"x = 1")[0][2]


def test_null_bytes_are_refused_with_their_line():
    problems = rejected("x = 1\ny = '\x00'\n")
    assert problems == [("tenant.py", 2, "source contains a null byte")]


def test_module_over_the_byte_limit_is_refused():
    policy = POLICY.with_limits(max_module_bytes=100)
    assert "limit is 100" in rejected("x = 1\n" * 50, policy)[0][2]


def test_byte_limit_counts_utf8_bytes_not_characters():
    policy = POLICY.with_limits(max_module_bytes=100, max_line_chars=100)
    assert rejected("s = '" + "é" * 60 + "'", policy)


def test_every_long_line_is_named():
    policy = POLICY.with_limits(max_line_chars=10)
    problems = rejected("x = 1\ny = 'aaaaaaaaaaaa'\nz = 2\nw = 'bbbbbbbbbbbb'\n", policy)
    assert [p[1] for p in problems] == [2, 4]


def test_a_megabyte_line_is_refused():
    problems = rejected("x = '" + "a" * (1024 * 1024 - 10) + "'")
    assert problems[0][1] == 1 and "characters long" in problems[0][2]


def test_lone_surrogates_are_refused():
    assert "Unicode" in rejected("x = '\ud800'")[0][2]


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "(" * 10_000 + "1" + ")" * 10_000,
        "x = " + "[" * 100_000 + "]" * 100_000,
        "x = " + "-" * 100_000 + "1",
        "x = " + "not " * 50_000 + "1",
        "x = a" + ".b" * 50_000,
        "x = f" + "()" * 50_000,
        "x = " + "+".join(["1"] * 100_000),
        "".join(" " * i + "if x:\n" for i in range(200)) + " " * 200 + "pass\n",
    ],
    ids=["parens", "lists", "unary", "not", "attributes", "calls", "sum", "blocks"],
)
def test_deep_nesting_is_refused_quickly(source):
    assert rejected(source, WIDE)


def test_huge_int_literal_is_refused():
    assert rejected("x = " + "9" * 5000)


def test_huge_constant_expressions_are_not_folded_at_compile_time():
    code = compile_module("x = 10**10**10\ny = 'a' * 10**10\n", "tenant.py", POLICY)
    assert isinstance(code, types.CodeType)


def test_syntax_warnings_do_not_abort_the_compile():
    code = compile_module("x = 1\ny = x is 1\nz = '\\d'\n", "tenant.py", POLICY)
    assert isinstance(code, types.CodeType)


def test_trusted_policy_compiles_plain_python_with_the_same_size_checks():
    trusted = Policy.trusted()
    code = compile_module("import os\nx = os.__name__\n", "tenant.py", trusted)
    assert isinstance(code, types.CodeType)
    assert rejected("x = '\x00'", trusted)
    assert rejected("x = " + "(" * 10_000 + ")" * 10_000, trusted)


def test_line_length_counts_python_lines_not_unicode_line_separators():
    policy = POLICY.with_limits(max_line_chars=100)
    problems = rejected("x = '" + "a\u2028" * 60 + "'\n", policy)
    assert problems[0][1] == 1
