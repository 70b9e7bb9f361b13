"""Attack class: reaching object internals and dangerous builtins from tenant code."""

from __future__ import annotations

import pytest

from dynworkers.sandbox_policy.errors import SourceRejected
from dynworkers.sandbox_policy.safe_builtins import ALLOWED, make_safe_builtins
from tests.sandbox_policy.tenant_harness import run


@pytest.mark.parametrize(
    "source",
    [
        "x = ().__class__",
        "x = object.__subclasses__()",
        "def f():\n    pass\ng = f.__globals__",
        "x = __builtins__",
        "x = __import__('os')",
        "class A:\n    __slots__ = ()",
        "def f(_x):\n    pass",
        "x = 1\nx.__dict__",
    ],
)
def test_underscore_names_are_refused_at_compile_time(source):
    with pytest.raises(SourceRejected, match='"_'):
        run(source)


@pytest.mark.parametrize("name", ["__class__", "__subclasses__", "__globals__", "__dict__", "_x"])
def test_getattr_with_underscore_names_is_refused(name):
    with pytest.raises(AttributeError, match="private"):
        run(f"x = getattr((), {name!r})")


def test_getattr_default_does_not_hide_a_refusal():
    with pytest.raises(AttributeError, match="private"):
        run("x = getattr((), '__class__', None)")


def test_hasattr_reports_refused_names_as_absent():
    ns = run("a = hasattr((), '__class__')\nb = hasattr([], 'append')")
    assert (ns["a"], ns["b"]) == (False, True)


def test_getattr_refuses_a_str_subclass_name_that_could_lie():
    source = "class N(str):\n    pass\nx = getattr((), N('__class__'))"
    with pytest.raises(TypeError, match="must be a string"):
        run(source)


def test_type_mro_is_refused():
    with pytest.raises(AttributeError, match="mro"):
        run("x = type(1).mro()")


def test_three_argument_type_is_refused():
    with pytest.raises(TypeError, match="exactly one argument"):
        run("X = type('X', (object,), {'__init__': None})")


def test_type_of_a_class_is_refused():
    with pytest.raises(TypeError, match="type\\(\\) of a class"):
        run("meta = type(int)")


@pytest.mark.parametrize(
    "name",
    [
        "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "exec", "eval",
        "compile", "open", "input", "globals", "locals", "vars", "dir", "breakpoint",
        "memoryview", "help", "__loader__", "__spec__", "id", "exit", "quit",
    ],
)  # fmt: skip
def test_dangerous_builtins_are_absent(name):
    assert name not in make_safe_builtins(lambda *a: None)
    assert name not in ALLOWED


@pytest.mark.parametrize("name", ["BaseException", "SystemExit", "open", "globals", "vars"])
def test_absent_builtins_are_a_name_error(name):
    with pytest.raises(NameError, match=name):
        run(f"x = {name}")


def test_eval_and_exec_calls_are_refused_at_compile_time():
    with pytest.raises(SourceRejected) as info:
        run("eval('1')\nexec('x = 1')")
    assert [p[1] for p in info.value.problems] == [1, 2]


def test_metaclass_keyword_is_refused():
    with pytest.raises(SourceRejected, match="metaclass"):
        run("class A(metaclass=int):\n    pass")


def test_class_keywords_are_refused_at_compile_time():
    with pytest.raises(SourceRejected, match="class keywords"):
        run("class A(object, flag=1):\n    pass")


def test_subclassing_a_function_type_is_refused():
    with pytest.raises(TypeError, match="subclassing"):
        run("def f():\n    pass\nclass A(type(f)):\n    pass")


def test_writes_to_builtin_types_and_functions_are_refused():
    with pytest.raises(TypeError, match="cannot be modified"):
        run("def f():\n    pass\nf.attr = 1")
    with pytest.raises(TypeError, match="cannot be modified"):
        run("setattr(str, 'upper', None)")


def test_writes_to_registered_api_classes_are_refused():
    source = "from workers import WorkerEntrypoint\nWorkerEntrypoint.hello = None"
    with pytest.raises(TypeError, match="cannot be modified"):
        run(source)


def test_writes_to_module_proxies_are_refused():
    with pytest.raises(TypeError, match="cannot be modified"):
        run("import json\njson.dumps = None")


def test_setattr_refuses_private_names_on_tenant_objects():
    with pytest.raises(AttributeError, match="private"):
        run("class A:\n    pass\nsetattr(A(), '__class__', int)")


def test_bare_except_is_refused_so_suspension_cannot_be_swallowed():
    with pytest.raises(SourceRejected, match="bare 'except:'"):
        run("try:\n    pass\nexcept:\n    pass")


def test_return_in_finally_is_refused():
    source = "def f():\n    try:\n        return 1\n    finally:\n        return 2"
    with pytest.raises(SourceRejected, match="'return' inside 'finally:'"):
        run(source)


def test_break_in_finally_is_refused_but_a_loop_inside_finally_may_break():
    bad = "for i in range(3):\n    try:\n        pass\n    finally:\n        break"
    with pytest.raises(SourceRejected, match="'break' inside 'finally:'"):
        run(bad)
    ok = "try:\n    pass\nfinally:\n    for i in range(3):\n        break\n    done = True"
    assert run(ok)["done"] is True


def test_super_init_outside_tenant_classes_is_refused():
    source = "class A(dict):\n    pass\ns = super(A, A())\nx = 1\n"
    run(source)  # two-argument super itself is fine
    with pytest.raises(SourceRejected, match="__init__"):
        run("x = super(dict, {}).__init__")


def test_writes_to_unhashable_builtin_values_are_refused_cleanly():
    with pytest.raises(TypeError, match="cannot be modified"):
        run("s = {1}\ns.x = 1")


def test_a_module_proxy_built_by_tenant_code_is_not_readable():
    with pytest.raises(AttributeError, match="not accessible"):
        run("import json\nP = type(json)\np = P('os', {'x': 1})\nx = p.x")
