"""The modules of the default preset, as code written for Cloudflare's Python Workers uses them;
annotations, builtin exceptions, print, and compile errors in a Python programmer's words."""

from __future__ import annotations

import pytest

from dynworkers.sandbox_policy.errors import SourceRejected
from dynworkers.sandbox_policy.policy import Policy
from tests.sandbox_policy.tenant_harness import Tenant, run


def test_urllib_parse_in_its_three_import_forms() -> None:
    module = run(
        """
from urllib.parse import urlparse, parse_qs
import urllib.parse
from urllib import parse

url = urlparse("https://example.com/a/b?x=1&y=2#frag")
result = [url.scheme, url.netloc, url.path, parse_qs(url.query), url.geturl()]
quoted = urllib.parse.quote("a b/c") + " " + parse.urlencode({"q": "x y"})
"""
    )
    assert module["result"] == [
        "https",
        "example.com",
        "/a/b",
        {"x": ["1"], "y": ["2"]},
        "https://example.com/a/b?x=1&y=2#frag",
    ]
    assert module["quoted"] == "a%20b/c q=x+y"


def test_urllib_offers_only_parse() -> None:
    with pytest.raises(ImportError):
        run("from urllib import request")
    with pytest.raises(ImportError):
        run("import urllib.request")


def test_the_everyday_modules() -> None:
    module = run(
        """
import hashlib, base64, uuid, string, itertools, functools, collections

digest = hashlib.sha256(b"abc").hexdigest()[:8]
encoded = base64.b64encode(b"hi").decode()
valid = len(str(uuid.uuid4())) == 36
letters = string.ascii_lowercase[:3]
pairs = list(itertools.islice(itertools.count(), 3))
total = functools.reduce(lambda a, b: a + b, [1, 2, 3])
counts = collections.Counter("abca").most_common(1)
"""
    )
    assert [module[k] for k in ("digest", "encoded", "valid", "letters", "pairs")] == [
        "ba7816bf",
        "aGk=",
        True,
        "abc",
        [0, 1, 2],
    ]
    assert module["total"] == 6 and module["counts"] == [("a", 2)]


def test_string_has_no_formatter() -> None:
    with pytest.raises(ImportError):
        run("from string import Formatter")


def test_annotations_compile_and_typing_names_exist() -> None:
    module = run(
        """
from typing import Any, Optional, Dict, List

count: int = 3
names: List[str]

def greet(name: str, times: Optional[int] = None) -> Dict[str, Any]:
    result: Dict[str, Any] = {"name": name}
    return result

class Box:
    size: int = 1

    def __init__(self, size: int) -> None:
        self.size: int = size

out = [count, greet("a"), Box(4).size]
"""
    )
    assert module["out"] == [3, {"name": "a"}, 4]


def test_dataclasses_without_exec() -> None:
    module = run(
        """
from dataclasses import dataclass, field, asdict, replace, FrozenInstanceError

@dataclass
class Item:
    name: str
    price: float = 0.0
    tags: list = field(default_factory=list)

@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int = 0

item = Item("pen", tags=["office"])
other = replace(item, price=2.5)
frozen_refused = False
try:
    Version(1).major = 2
except FrozenInstanceError:
    frozen_refused = True
out = [
    repr(item), asdict(other), item == Item("pen", 0.0, ["office"]),
    Version(1, 2) < Version(2), frozen_refused, hash(Version(1)) == hash(Version(1)),
]
"""
    )
    assert module["out"] == [
        "Item(name='pen', price=0.0, tags=['office'])",
        {"name": "pen", "price": 2.5, "tags": ["office"]},
        True,
        True,
        True,
        True,
    ]


def test_a_dataclass_with_a_missing_argument_says_which() -> None:
    module = run(
        "from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\n"
        "def make():\n    return P()\n"
    )
    with pytest.raises(TypeError, match="missing required argument: 'x'"):
        module["make"]()  # type: ignore[operator]


def test_datetime_strptime() -> None:
    module = run(
        "from datetime import datetime\nd = datetime.strptime('2024-05-06', '%Y-%m-%d')\n"
        "out = [d.year, d.month, d.day]\n"
    )
    assert module["out"] == [2024, 5, 6]


@pytest.mark.parametrize(
    "name",
    [
        "ConnectionError",
        "PermissionError",
        "NotImplementedError",
        "LookupError",
        "TimeoutError",
        "OSError",
        "FileNotFoundError",
        "StopAsyncIteration",
    ],
)
def test_the_builtin_exceptions_people_raise(name: str) -> None:
    module = run(f"try:\n    raise {name}('x')\nexcept {name} as e:\n    caught = str(e)\n")
    assert module["caught"] == "x"


def test_print_goes_to_the_tenants_log_from_async_code_too() -> None:
    tenant = Tenant()
    module = tenant.run("async def main():\n    print('from', 'async')\n")
    coroutine = module["main"]()  # type: ignore[operator]
    from dynworkers.sandbox_policy import aio

    aio.block_on(coroutine)
    assert tenant.printed == ["from async"]


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("def f():\n    x = 1\n    def g():\n        nonlocal x\n", "'nonlocal' statements"),
        ("match 1:\n    case 1:\n        pass\n", "'match' statements"),
        ("try:\n    pass\nexcept* ValueError:\n    pass\n", "'except*'"),
    ],
)
def test_compile_errors_name_the_construct_in_words(source: str, words: str) -> None:
    with pytest.raises(SourceRejected) as info:
        run(source)
    assert words in str(info.value)
    assert "statements are not allowed" not in str(info.value).replace(words, "")


def test_strict_keeps_no_standard_modules() -> None:
    with pytest.raises(ImportError):
        run("import urllib.parse", Policy.strict())
