"""The builtins dict that tenant code sees.

Runs inside the sandbox process; the static table is built once at import (in the zygote) and
copied per tenant module with that namespace's `__import__`. Every allowed name carries the reason
it is safe; a name that is not listed is absent, so tenant code gets a plain `NameError`.

Deliberately absent: BaseException, SystemExit, KeyboardInterrupt, GeneratorExit (tenant code
must not raise or catch control flow), exec, eval, compile (new code), open, input (I/O), globals,
locals, vars, dir (namespace and attribute introspection), breakpoint, help, memoryview, id,
exit, quit, ExceptionGroup (except* is refused at compile time).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from dynworkers.sandbox_policy import guards

_B = builtins.__dict__

#: name -> why it is safe. Each value is taken from `builtins` unless a guard replaces it below.
ALLOWED: dict[str, str] = {
    # constants
    "None": "a constant",
    "True": "a constant",
    "False": "a constant",
    "Ellipsis": "a constant",
    "NotImplemented": "a constant",
    # data types: constructors and isinstance targets; attribute reads on them are guarded
    "bool": "value type",
    "int": "value type",
    "float": "value type",
    "complex": "value type",
    "str": "value type; .format/.format_map are swapped for safe_format by the getattr guard",
    "bytes": "value type",
    "bytearray": "mutable byte buffer owned by the tenant",
    "list": "container",
    "tuple": "container",
    "dict": "container",
    "set": "container",
    "frozenset": "container",
    "range": "lazy integer sequence",
    "slice": "slice value; subscripting goes through _getitem_",
    "object": "base class; object has no public attributes and its dunders are unreachable",
    # iteration helpers: they only call the iterator protocol on tenant objects
    "enumerate": "iterator",
    "zip": "iterator",
    "map": "iterator; calls only the function the tenant passes",
    "filter": "iterator; calls only the function the tenant passes",
    "reversed": "iterator",
    "iter": "iterator protocol",
    "next": "iterator protocol",
    "sorted": "returns a new list",
    "aiter": "async iterator protocol; only the interpreter's async generators implement it",
    "anext": "async iterator protocol; the awaitable it returns is driven by the sandbox's loop",
    # class helpers: descriptors over tenant functions
    "property": "descriptor over tenant functions",
    "staticmethod": "descriptor over tenant functions",
    "classmethod": "descriptor over tenant functions",
    "super": "zero-arg form needs the __class__ cell; reads on super objects are guarded",
    "isinstance": "checks only; tenant classes cannot define __instancecheck__",
    "issubclass": "checks only; tenant classes cannot define __subclasscheck__",
    "callable": "a check",
    # pure functions on values
    "abs": "pure",
    "all": "pure",
    "any": "pure",
    "ascii": "pure (repr)",
    "bin": "pure",
    "chr": "pure",
    "divmod": "pure",
    "format": "format(value, spec): no field walking, unlike str.format",
    "hash": "pure",
    "hex": "pure",
    "len": "pure",
    "max": "pure",
    "min": "pure",
    "oct": "pure",
    "ord": "pure",
    "pow": "pure; huge results end in the memory or CPU limit",
    "repr": "pure",
    "round": "pure",
    "sum": "pure",
    # exceptions tenant code may raise and catch (all below Exception)
    "Exception": "catchable error base; BaseException stays hidden",
    "ArithmeticError": "error",
    "AssertionError": "error",
    "AttributeError": "error",
    "EOFError": "error",
    "ImportError": "error raised by the import guard",
    "IndexError": "error",
    "KeyError": "error",
    "LookupError": "error",
    "MemoryError": "error raised when the memory limit is reached",
    "ModuleNotFoundError": "error",
    "NameError": "error",
    "NotImplementedError": "error",
    "OverflowError": "error",
    "RecursionError": "error",
    "RuntimeError": "error",
    "StopIteration": "error used by iterators",
    "TimeoutError": "error",
    "TypeError": "error",
    "UnicodeError": "error",
    "UnicodeDecodeError": "error",
    "UnicodeEncodeError": "error",
    "ValueError": "error",
    "ZeroDivisionError": "error",
    # errors people raise to say what went wrong (PEP 3151's OSError family included): raising
    # or catching one touches nothing; no builtin that could fail with them is offered
    "OSError": "error",
    "ConnectionError": "error",
    "ConnectionAbortedError": "error",
    "ConnectionRefusedError": "error",
    "ConnectionResetError": "error",
    "BrokenPipeError": "error",
    "PermissionError": "error",
    "FileNotFoundError": "error",
    "FileExistsError": "error",
    "IsADirectoryError": "error",
    "NotADirectoryError": "error",
    "InterruptedError": "error",
    "ProcessLookupError": "error",
    "ChildProcessError": "error",
    "BlockingIOError": "error",
    "UnboundLocalError": "error",
    "FloatingPointError": "error",
    "BufferError": "error",
    "StopAsyncIteration": "error used by async iterators",
    "UnicodeTranslateError": "error",
    "EnvironmentError": "alias of OSError",
    "IOError": "alias of OSError",
}

#: Names whose real builtin is replaced by a guard (reason on the right).
GUARDED: dict[str, Callable[..., Any]] = {
    "getattr": guards.guarded_getattr,  # same checks as obj.name
    "hasattr": guards.guarded_hasattr,  # False for names the guard refuses
    "setattr": guards.guarded_setattr,  # through the write guard, public names only
    "delattr": guards.guarded_delattr,  # through the write guard, public names only
    "type": guards.safe_type,  # one argument only; never returns a metaclass
    # class statements compile to __build_class__(..., metaclass=__metaclass__); the metaclass
    # (guards.tenant_class) vets the bases, so the real one is safe here.
    "__build_class__": builtins.__build_class__,
}

_STATIC: dict[str, object] = {name: _B[name] for name in ALLOWED}
_STATIC.update(GUARDED)


def make_safe_builtins(import_fn: Callable[..., object]) -> dict[str, object]:
    """A fresh builtins dict for one namespace, with its `__import__`."""
    table = dict(_STATIC)
    table["__import__"] = import_fn  # resolves only API modules, proxies and tenant modules
    return table


def make_trusted_builtins(
    import_fn: Callable[..., object], print_fn: Callable[..., None]
) -> dict[str, object]:
    """Full builtins for `Policy.trusted()` code, with the namespace's import and print."""
    table = dict(_B)
    table["__import__"] = import_fn
    table["print"] = print_fn
    return table
