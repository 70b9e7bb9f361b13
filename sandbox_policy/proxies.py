"""Vetted, read-only stand-ins for the standard modules tenant code may import.

Runs inside the sandbox process (imported by the zygote, so every proxy is built once before
fork). Owns one `ModuleProxy` per name in `policy.KNOWN_MODULES` and the per-process random
generator (`reseed()` after fork). A proxy exposes only the members listed here, each with the
reason it is safe; never the module itself (the raw `json`, `re` and `datetime` re-export `sys`
and `codecs`). A missing member is an `AttributeError` (or `ImportError` for `from m import x`).
"""

from __future__ import annotations

import base64
import collections
import datetime
import functools
import hashlib
import itertools
import json
import math
import random
import re
import string
import time
import typing
import urllib.parse
import uuid
from collections.abc import Mapping

from dynworkers.sandbox_policy import tenant_dataclasses
from dynworkers.sandbox_policy.guards import (
    register_open_module,
    register_safe_type,
    register_writable_type,
)
from dynworkers.sandbox_policy.policy import KNOWN_MODULES


class ModuleProxy:
    """A read-only module: attribute reads come from a private table, writes are refused."""

    __slots__ = ("__members", "__name")
    __members: dict[str, object]
    __name: str

    def __init__(self, name: str, members: Mapping[str, object]) -> None:
        object.__setattr__(self, "_ModuleProxy__name", name)
        object.__setattr__(self, "_ModuleProxy__members", dict(members))

    def __getattr__(self, attr: str) -> object:
        try:
            return self.__members[attr]
        except KeyError:
            raise AttributeError(
                f"module {self.__name!r} offers no {attr!r} in the sandbox"
            ) from None

    def __setattr__(self, attr: str, value: object) -> None:
        raise AttributeError(f"module {self.__name!r} is read-only")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(f"module {self.__name!r} is read-only")

    def __dir__(self) -> list[str]:
        return sorted(self.__members)

    def __repr__(self) -> str:
        return f"<module {self.__name!r} (sandbox proxy)>"


def _pick(module: object, names: str) -> dict[str, object]:
    return {name: getattr(module, name) for name in names.split()}


# random: one generator per process, reseeded after fork so that siblings differ -----------------
_rng = random.Random()


def reseed() -> None:
    """Reseed the tenant-visible generator from the OS; call once in each forked child."""
    _rng.seed()


# Value types that proxied functions return: their public attributes are plain data methods.
for _cls in (
    datetime.date, datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone,
    datetime.tzinfo, re.Pattern, re.Match, uuid.UUID, type(hashlib.sha256()),
    type(hashlib.blake2b()), type(hashlib.blake2s()), type(hashlib.sha3_256()),
    collections.Counter, collections.OrderedDict, collections.defaultdict, collections.deque,
    collections.ChainMap, itertools.chain, type(functools.lru_cache(None)(len)),
    json.JSONDecodeError, urllib.parse.ParseResult, urllib.parse.SplitResult,
    urllib.parse.DefragResult, urllib.parse.ParseResultBytes, urllib.parse.SplitResultBytes,
):  # fmt: skip
    register_safe_type(_cls)
# Containers a tenant builds and fills like dict and list.
for _cls in (collections.Counter, collections.OrderedDict, collections.defaultdict,
             collections.deque, collections.ChainMap):  # fmt: skip
    register_writable_type(_cls)


_MEMBERS: dict[str, dict[str, object]] = {
    # Pure encode/decode of str and plain data; no file or class hooks beyond callables the
    # tenant passes itself. JSONDecodeError to catch bad input.
    "json": _pick(json, "dumps loads JSONDecodeError"),
    # Pure numeric functions and constants; nothing in math touches the process.
    "math": {n: getattr(math, n) for n in dir(math) if not n.startswith("_")},
    # Regular expressions over tenant strings; Pattern/Match are registered value types.
    # Catastrophic backtracking only burns the tenant's own CPU deadline.
    "re": _pick(
        re,
        "compile match fullmatch search findall finditer sub subn split escape error "
        "IGNORECASE I MULTILINE M DOTALL S VERBOSE X ASCII A",
    ),
    # Calendar arithmetic on immutable values.
    "datetime": _pick(datetime, "date time datetime timedelta timezone tzinfo MINYEAR MAXYEAR"),
    # Clocks only. No sleep(): it would park the sandbox's only thread; workflows use
    # step.sleep, and deadlines end anything that waits.
    "time": _pick(time, "time time_ns monotonic monotonic_ns perf_counter perf_counter_ns"),
    # Bound methods of this process's private generator (no access to the module's global one,
    # no SystemRandom or os.urandom exposure).
    "random": _pick(
        _rng,
        "random uniform randint randrange choice choices shuffle sample gauss normalvariate "
        "triangular getrandbits randbytes seed",
    ),
    # Digests of tenant bytes; no file_digest (files) and no new() (any OpenSSL algorithm name).
    "hashlib": _pick(
        hashlib,
        "md5 sha1 sha224 sha256 sha384 sha512 blake2b blake2s sha3_224 sha3_256 sha3_384 sha3_512",
    ),
    # Pure byte transforms.
    "base64": _pick(
        base64,
        "b64encode b64decode urlsafe_b64encode urlsafe_b64decode standard_b64encode "
        "standard_b64decode b32encode b32decode b16encode b16decode b85encode b85decode",
    ),
    # Container types only; namedtuple is left out because it builds classes with exec.
    "collections": _pick(collections, "Counter OrderedDict defaultdict deque ChainMap"),
    # Lazy iterator builders over tenant iterables; memory and CPU limits bound the infinite ones.
    "itertools": _pick(
        itertools,
        "count cycle repeat accumulate chain compress dropwhile filterfalse groupby islice "
        "pairwise starmap takewhile tee zip_longest product permutations combinations "
        "combinations_with_replacement",
    ),
    # Higher-order helpers that only call what the tenant passes. No wraps/update_wrapper or
    # total_ordering: they copy and set dunder attributes behind the write guard's back.
    "functools": _pick(functools, "reduce partial cmp_to_key lru_cache cache"),
    # Constants only: Formatter walks attributes, Template reads class internals.
    "string": _pick(
        string,
        "ascii_letters ascii_lowercase ascii_uppercase digits hexdigits octdigits punctuation "
        "printable whitespace",
    ),
    # Random and name-based UUIDs. No uuid1()/getnode(): they read the host's MAC address and
    # may run a subprocess to find it.
    "uuid": _pick(
        uuid, "UUID uuid3 uuid4 uuid5 NAMESPACE_DNS NAMESPACE_URL NAMESPACE_OID NAMESPACE_X500"
    ),
    # Pure string functions on URLs; the result tuples are registered value types (.netloc,
    # .query, geturl()).
    "urllib.parse": _pick(
        urllib.parse,
        "urlparse urlunparse urlsplit urlunsplit urljoin urldefrag urlencode quote quote_plus "
        "quote_from_bytes unquote unquote_plus unquote_to_bytes parse_qs parse_qsl ParseResult "
        "SplitResult DefragResult",
    ),
    # Names for annotations. Their objects are opaque to tenant code (every attribute of a
    # typing construct starts with "_" or is refused); get_type_hints (it evals strings),
    # NamedTuple and TypedDict (they build classes behind the class guard) are left out.
    "typing": _pick(
        typing,
        "Any Optional Union List Dict Tuple Set FrozenSet Type Callable Iterable Iterator "
        "Generator AsyncIterator AsyncIterable AsyncGenerator Awaitable Coroutine Mapping "
        "MutableMapping Sequence MutableSequence Literal Final ClassVar Annotated TypeVar cast "
        "TYPE_CHECKING NoReturn",
    ),
    # The decorator and helpers rebuilt without exec (see tenant_dataclasses).
    "dataclasses": tenant_dataclasses.MEMBERS,
}

assert set(_MEMBERS) == KNOWN_MODULES, "every KNOWN_MODULES name needs a vetted proxy"

#: name -> read-only proxy, built once per process (before fork, in the zygote).
PROXIES: dict[str, ModuleProxy] = {name: ModuleProxy(name, m) for name, m in _MEMBERS.items()}
for _proxy in PROXIES.values():
    register_open_module(_proxy)  # readable; a ModuleProxy a tenant builds itself is not


def package_proxy(name: str, children: Mapping[str, object]) -> ModuleProxy:
    """The parent of dotted proxies (`urllib` for `urllib.parse`): its allowed submodules only."""
    proxy = ModuleProxy(name, children)
    register_open_module(proxy)
    return proxy


def proxy_module(name: str, module: object) -> ModuleProxy:
    """A read-only view of an API module: its `__all__`, or its public non-module names."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and not isinstance(v, type(json))
        ]
    proxy = ModuleProxy(name, {n: getattr(module, n) for n in names})
    register_open_module(proxy)
    return proxy
