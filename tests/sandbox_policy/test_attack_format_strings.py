"""Attack class: str.format and friends walking attributes and indexes behind the guards."""

from __future__ import annotations

import pytest

from dynworkers.sandbox_policy.errors import SourceRejected
from dynworkers.sandbox_policy.policy import Policy
from tests.sandbox_policy.tenant_harness import Tenant, run


@pytest.mark.parametrize(
    "expression",
    [
        '"{0.__class__}".format(1)',
        '"{x.__class__.__mro__}".format(x=1)',
        '"{0[0]}".format([1])',
        '"{.real}".format(1)',
        'str.format("{0.__class__}", 1)',
        'getattr("{0.__class__}", "format")(1)',
        'getattr(str, "format")("{0.__class__}", 1)',
        '"{a.__class__}".format_map({"a": 1})',
        '"{a[k]}".format_map({"a": {"k": 1}})',
        '"{:{0.__class__}}".format(1)',
    ],
)
def test_format_fields_may_not_walk_attributes_or_items(expression):
    with pytest.raises(ValueError, match="may not read attributes"):
        run(f"x = {expression}")


def test_format_on_a_tenant_str_subclass_is_the_safe_one():
    source = 'class S(str):\n    pass\nx = S("{0.__class__}").format(1)\n'
    with pytest.raises(ValueError, match="may not read attributes"):
        run(source)


def test_super_cannot_reach_the_real_str_format():
    source = (
        "class S(str):\n"
        "    def fmt(self):\n"
        "        return super().format(1)\n"
        'x = S("{0.__class__}").fmt()\n'
    )
    with pytest.raises(ValueError, match="may not read attributes"):
        run(source)


def test_two_argument_super_over_str_gets_the_safe_format():
    with pytest.raises(ValueError, match="may not read attributes"):
        run('x = super(str, "{0.__class__}").format(1)')


def test_fstring_dunder_attribute_is_refused_at_compile_time():
    with pytest.raises(SourceRejected, match="__class__"):
        run('x = 1\ny = f"{x.__class__}"')


def test_fstring_attribute_goes_through_the_getattr_guard():
    source = "def gen():\n    yield 1\ng = gen()\ny = f'{g.gi_running}'\n"
    with pytest.raises(AttributeError, match="gi_running"):
        run(source)


def test_plain_format_fields_still_work():
    ns = run(
        'a = "{} {} {name!r} {:>4} {x:.{p}f}".format(1, 2, 1, name="n", x=3.14159, p=2)\n'
        'b = "{k}-{v}".format_map({"k": "key", "v": 7})\n'
        "c = str.format('{}+{}', 1, 2)\n"
        'd = f"{a!r:.3}"\n'
    )
    assert ns["a"] == "1 2 'n'    1 3.14"
    assert ns["b"] == "key-7"
    assert ns["c"] == "1+2"
    assert ns["d"] == '"1 '


def test_mixing_automatic_and_manual_numbering_is_refused_like_python():
    with pytest.raises(ValueError, match="numbering"):
        run('x = "{} {0}".format(1)')


def test_string_module_offers_no_formatter():
    source = "import string\nf = string.Formatter\n"
    t = Tenant(Policy.default().with_modules("string"))
    with pytest.raises(AttributeError, match="Formatter"):
        t.run(source)


def test_operator_module_is_not_importable():
    with pytest.raises(ImportError, match="operator"):
        run("import operator")
