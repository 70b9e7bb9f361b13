"""TenantNamespace happy paths: ordinary tenant Python works under the guards."""

from __future__ import annotations

import pytest

from dynworkers.sandbox_policy import proxies
from dynworkers.sandbox_policy.namespace import TenantNamespace
from dynworkers.sandbox_policy.policy import Policy
from tests.sandbox_policy.tenant_harness import Tenant, WorkerEntrypoint, run

CLASSES = """
class Shape:
    sides = 0
    def __init__(self, name):
        self.name = name
    def describe(self):
        return self.name + " has " + str(self.sides) + " sides"

class Square(Shape):
    sides = 4
    def __init__(self):
        super().__init__("square")
    def describe(self):
        return super().describe() + "!"

class Bad(ValueError):
    def __init__(self, code):
        super().__init__("bad " + str(code))
        self.code = code

try:
    raise Bad(7)
except ValueError as e:
    caught = (str(e), e.code, e.args)

square = Square()
text = square.describe()
square.extra = [1]
square.extra.append(2)
setattr(square, "other", 3)
has = hasattr(square, "other")
got = getattr(square, "missing", "default")
kind = type(square) is Square
Shape.sides = 1
"""


def test_classes_inheritance_super_and_exceptions_work():
    ns = run(CLASSES)
    assert ns["text"] == "square has 4 sides!"
    assert ns["caught"] == ("bad 7", 7, ("bad 7",))
    assert ns["square"].extra == [1, 2]  # type: ignore[attr-defined]
    assert (ns["has"], ns["got"], ns["kind"]) == (True, "default", True)


def test_tenant_class_may_extend_a_registered_api_class():
    source = (
        "from workers import WorkerEntrypoint\n"
        "class Default(WorkerEntrypoint):\n"
        "    def fetch(self):\n"
        "        return self.hello() + ' via ' + str(self.env)\n"
        "answer = Default(None, 'env').fetch()\n"
    )
    ns = run(source)
    assert ns["answer"] == "hello from the API via env"
    assert isinstance(ns["Default"], type) and issubclass(ns["Default"], WorkerEntrypoint)


def test_closures_comprehensions_generators_and_unpacking_work():
    ns = run(
        "def counter(start):\n"
        "    box = [start]\n"
        "    def step():\n"
        "        box[0] = box[0] + 1  # RestrictedPython refuses += on items\n"
        "        return box[0]\n"
        "    return step\n"
        "c = counter(10)\n"
        "c()\n"
        "after = c()\n"
        "squares = [x * x for x in range(5) if x % 2 == 0]\n"
        "pairs = {k: v for k, v in zip('ab', (1, 2))}\n"
        "def evens(n):\n"
        "    for i in range(n):\n"
        "        if i % 2 == 0:\n"
        "            yield i\n"
        "total = sum(evens(10))\n"
        "first, *rest = [1, 2, 3]\n"
        "for a, (b, c2) in [(1, (2, 3))]:\n"
        "    nested = a + b + c2\n"
        "n = 2\n"
        "n *= 5\n"
        "n -= 1\n"
        "n //= 2\n"
        "n **= 2\n"
        "s = 'a'\n"
        "s += 'b'\n"
        "items = sorted({'b': 2, 'a': 1}.items(), key=lambda kv: kv[1])\n"
        "def kw(*args, **kwargs):\n"
        "    return len(args) + len(kwargs)\n"
        "called = kw(*[1, 2], **{'x': 3})\n"
    )
    assert ns["after"] == 12
    assert ns["squares"] == [0, 4, 16]
    assert ns["pairs"] == {"a": 1, "b": 2}
    assert ns["total"] == 20
    assert (ns["first"], ns["rest"], ns["nested"]) == (1, [2, 3], 6)
    assert (ns["n"], ns["s"], ns["called"]) == (16, "ab", 3)
    assert ns["items"] == [("a", 1), ("b", 2)]


def test_dict_list_set_and_str_methods_work():
    ns = run(
        "d = {'a': 1}\n"
        "d.update(b=2)\n"
        "d.setdefault('c', 3)\n"
        "keys = list(d.keys())\n"
        "value = d.get('z', 0)\n"
        "lst = [3, 1, 2]\n"
        "lst.sort()\n"
        "lst.extend([4])\n"
        "popped = lst.pop()\n"
        "st = {1}\n"
        "st.add(2)\n"
        "words = ' A b '.strip().lower().split()\n"
        "joined = '-'.join(words).upper()\n"
        "enc = 'é'.encode('utf-8').hex()\n"
        "big = (255).to_bytes(2, 'big')\n"
    )
    assert ns["keys"] == ["a", "b", "c"] and ns["value"] == 0
    assert ns["lst"] == [1, 2, 3] and ns["popped"] == 4 and ns["st"] == {1, 2}
    assert ns["joined"] == "A-B" and ns["enc"] == "c3a9" and ns["big"] == b"\x00\xff"


def test_print_routes_to_emit_print_once_per_call():
    tenant = Tenant()
    tenant.run(
        "print('hello', 42)\n"
        "print('a', 'b', sep='+', end='')\n"
        "def f():\n"
        "    print('inside')\n"
        "f()\n"
        "print()\n"
    )
    assert tenant.printed == ["hello 42", "a+b", "inside", ""]


def test_print_to_a_file_is_refused():
    with pytest.raises(TypeError, match="file"):
        run("print('x', file=[])")


def test_tenant_module_imports_another():
    ns = run(
        "import helper\nfrom helper import double\nx = double(4) + helper.BASE\n",
        helper="BASE = 100\ndef double(x):\n    return 2 * x\n",
    )
    assert ns["x"] == 108


def test_dotted_tenant_import_binds_the_top_package():
    tenant = Tenant()
    tenant.load("pkg", "NAME = 'pkg'\n")
    sub = tenant.load("pkg.sub", "VALUE = 5\n")
    tenant.modules["pkg"].sub = sub  # type: ignore[attr-defined]  # the loader's job
    ns = tenant.run("import pkg.sub\nfrom pkg.sub import VALUE\nx = pkg.sub.VALUE + VALUE\n")
    assert ns["x"] == 10


def test_missing_tenant_module_is_an_import_error():
    with pytest.raises(ImportError, match="'nothere' is not allowed"):
        run("import nothere")


def test_standard_proxies_work():
    ns = run(
        "import json, math, re, datetime, time, random\n"
        "data = json.loads(json.dumps({'a': [1, 2]}))\n"
        "root = math.sqrt(16) + math.pi * 0\n"
        "pattern = re.compile(r'(\\d+)-(\\d+)')\n"
        "m = pattern.match('12-34')\n"
        "groups = m.groups()\n"
        "subbed = re.sub('a', 'b', 'banana')\n"
        "d = datetime.datetime(2024, 1, 31) + datetime.timedelta(days=1)\n"
        "iso = d.date().isoformat()\n"
        "now = time.time() > 0\n"
        "r = random.randint(1, 6)\n"
        "try:\n"
        "    json.loads('{')\n"
        "except json.JSONDecodeError as e:\n"
        "    pos = e.pos\n"
    )
    assert ns["data"] == {"a": [1, 2]} and ns["root"] == 4.0
    assert ns["groups"] == ("12", "34") and ns["subbed"] == "bbnbnb"
    assert ns["iso"] == "2024-02-01" and ns["now"] is True
    assert 1 <= ns["r"] <= 6 and ns["pos"] == 1


def test_every_known_module_proxy_is_usable():
    tenant = Tenant(Policy.default().with_modules(*proxies.PROXIES))
    ns = tenant.run(
        "import hashlib, base64, collections, itertools, functools, string, uuid\n"
        "h = hashlib.sha256(b'x').hexdigest()\n"
        "b = base64.b64encode(b'hi').decode()\n"
        "c = collections.Counter('aab').most_common(1)\n"
        "dd = collections.defaultdict(list)\n"
        "dd['k'].append(1)\n"
        "ch = list(itertools.chain.from_iterable([[1], [2]]))\n"
        "red = functools.reduce(lambda a, b: a + b, [1, 2, 3])\n"
        "digits = string.digits\n"
        "u = uuid.uuid5(uuid.NAMESPACE_DNS, 'example.com').hex\n"
    )
    assert ns["h"].startswith("2d711642") and ns["b"] == "aGk="  # type: ignore[union-attr]
    assert ns["c"] == [("a", 2)] and ns["dd"] == {"k": [1]} and ns["ch"] == [1, 2]
    assert ns["red"] == 6 and ns["digits"] == "0123456789" and len(ns["u"]) == 32  # type: ignore


def test_reseed_changes_the_random_sequence():
    proxies.reseed()
    first = proxies.PROXIES["random"].random()  # type: ignore[attr-defined]
    proxies.reseed()
    assert proxies.PROXIES["random"].random() != first  # type: ignore[attr-defined]


def test_module_globals_carry_every_guard_name_and_are_fresh():
    ns = TenantNamespace(
        Policy.default(), import_tenant_module=lambda n: None, api_modules={}, emit_print=print
    )
    g = ns.module_globals("m")
    for name in (
        "__builtins__", "__name__", "_getattr_", "_getitem_", "_write_", "_getiter_",
        "_iter_unpack_sequence_", "_unpack_sequence_", "_inplacevar_", "_print_", "_apply_",
        "__metaclass__", "_super_init_",
    ):  # fmt: skip
        assert name in g, name
    assert g["__name__"] == "m" and ns.module_globals("m") is not g


def test_trusted_policy_gets_full_builtins_and_real_imports():
    tenant = Tenant(Policy.trusted())
    ns = tenant.run(
        "import os\nimport json\nprint('trusted', os.sep)\n"
        "cls = ().__class__\nfrom workers import WorkerEntrypoint\n"
    )
    assert ns["cls"] is tuple and tenant.printed == ["trusted /"]
    assert ns["json"] is proxies.PROXIES["json"]  # resolved the same way as restricted code
