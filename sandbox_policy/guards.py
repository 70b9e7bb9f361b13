"""Runtime guards that RestrictedPython-compiled tenant code calls.

Runs inside the sandbox process, in the thread that runs tenant code. Imports only the standard
library. Owns the readable-type registry (`register_safe_type`), the record of tenant classes, and
the guard functions bound into each tenant module's globals (`_getattr_`, `_write_`, ...).

Policy: unknown means denied. An attribute is readable only when its name is public, is not a
known introspection name, and the object is of a kind listed here (builtin data types, tenant
classes and instances, registered safe types, vetted module proxies, tenant modules). Guards fail
by raising the builtin exception with the same meaning (`AttributeError`, `TypeError`) with a
message naming the object and the name; they never return a partial result.
"""

from __future__ import annotations

import _string  # the C parser behind str.format; used only to split format strings
import operator
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

_MISSING: Any = object()

#: Public names that still reach interpreter internals (frames, code, tracebacks, generators):
#: refused on every object, in addition to every name that starts with "_".
DENIED_NAMES: frozenset[str] = frozenset(
    {
        "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "gi_suspended",
        "cr_frame", "cr_code", "cr_await", "cr_origin", "cr_running", "cr_suspended",
        "ag_frame", "ag_code", "ag_await", "ag_running",
        "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace", "f_generator",
        "f_lasti", "f_lineno",
        "tb_frame", "tb_next", "tb_lasti", "tb_lineno",
        "func_globals", "func_code", "func_closure", "func_defaults", "func_dict",
        "im_func", "im_self", "im_class",
        "with_traceback",  # the only public door from an exception to a traceback
        "mro",  # type(x).mro() lists object and every base: a first step to __subclasses__
    }
)  # fmt: skip

#: Builtin types whose public attributes are plain data methods (the reason each is safe: they
#: compute on the value and return values of these same kinds). `str.format` and `format_map`
#: are replaced by `safe_format` below because they walk attributes and indexes.
DATA_TYPES: frozenset[type] = frozenset(
    {
        str, bytes, bytearray, int, float, complex, bool, type(None), list, tuple, dict, set,
        frozenset, range, slice, object,
    }
)  # fmt: skip

#: Types whose instances tenant code may modify through `_write_` (item and attribute stores).
_WRITABLE_TYPES: set[type] = {dict, list, bytearray}

#: Generator objects: only their iteration protocol; everything else leads to frames.
_GENERATOR_NAMES = frozenset({"send", "throw", "close"})

_safe_types: weakref.WeakSet[type] = weakref.WeakSet()
_tenant_classes: weakref.WeakSet[type] = weakref.WeakSet()
# Objects read like modules (vetted proxies, tenant modules); id -> object keeps the ids valid.
_open_modules: dict[int, object] = {}


def register_safe_type(cls: type) -> type:
    """Decorator: public attributes of `cls`, its subclasses and their instances become readable."""
    if not isinstance(cls, type):
        raise TypeError(f"register_safe_type expects a class, got {cls!r}")
    _safe_types.add(cls)
    return cls


def register_writable_type(cls: type) -> None:
    """Let tenant code store items and attributes on instances of `cls` (container types)."""
    _WRITABLE_TYPES.add(cls)


def register_open_module(obj: object) -> None:
    """Mark a module-like object (proxy, tenant module) whose public names tenant code may read."""
    _open_modules[id(obj)] = obj


def is_tenant_class(cls: object) -> bool:
    return isinstance(cls, type) and cls in _tenant_classes


def _is_safe_class(cls: type) -> bool:
    return any(base in _safe_types for base in cls.__mro__)


# names ------------------------------------------------------------------------------------------


def check_name(name: object) -> str:
    """Return `name` when tenant code may use it as an attribute name; raise otherwise."""
    # An exact str: a tenant str subclass could override startswith() or __eq__ to lie.
    if type(name) is not str:
        raise TypeError(f"attribute name must be a string, not {type(name).__name__!r}")
    if name.startswith("_"):
        raise AttributeError(f"'{name}': names starting with '_' are private and not accessible")
    if name in DENIED_NAMES:
        raise AttributeError(f"'{name}' is not accessible: it reaches interpreter internals")
    return name


def _readable(obj: object, name: str) -> bool:
    tp = type(obj)
    if tp in DATA_TYPES or tp in _tenant_classes or id(obj) in _open_modules:
        return True
    if isinstance(obj, type):
        # class objects: their public methods and constants, for kinds we know
        return (
            obj in DATA_TYPES
            or obj in _tenant_classes
            or _is_safe_class(obj)
            or issubclass(obj, Exception)
        )
    if _is_safe_class(tp) or isinstance(obj, Exception):
        return True
    if isinstance(obj, types.GeneratorType):
        return name in _GENERATOR_NAMES
    if isinstance(obj, super):
        this = cast(Any, obj).__thisclass__
        return this in _tenant_classes or _is_safe_class(this)
    return False


def _is_str_like(obj: object) -> bool:
    if isinstance(obj, super):
        obj = cast(Any, obj).__self__
    return isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))


def guarded_getattr(obj: object, name: object, default: object = _MISSING) -> object:
    """`getattr` for tenant code: the same checks as `obj.name`; default only when absent."""
    checked = check_name(name)
    if checked in ("format", "format_map") and _is_str_like(obj):
        target = cast(Any, obj).__self__ if isinstance(obj, super) else obj
        fn = safe_format if checked == "format" else safe_format_map
        return fn if isinstance(target, type) else _bind(fn, target)
    if not _readable(obj, checked):
        raise AttributeError(f"'{checked}' of {_kind(obj)} is not accessible from tenant code")
    if default is _MISSING:
        return getattr(obj, checked)
    return getattr(obj, checked, default)


def guarded_hasattr(obj: object, name: object) -> bool:
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def _kind(obj: object) -> str:
    if isinstance(obj, type):
        return f"class {obj.__name__!r}"
    return f"a {type(obj).__name__!r} object"


def _bind(fn: Callable[..., str], target: object) -> Callable[..., str]:
    def bound(*args: object, **kwargs: object) -> str:
        return fn(target, *args, **kwargs)

    return bound


# str.format without attribute or index walking --------------------------------------------------


def safe_format(template: str, /, *args: object, **kwargs: object) -> str:
    """`str.format` limited to plain fields: "{}", "{0}", "{name}", with conversion and spec."""
    return _render(template, args, kwargs, [0], 2)


def safe_format_map(template: str, mapping: Any, /) -> str:
    """`str.format_map` limited like `safe_format`."""
    return _render(template, (), mapping, [0], 2)


def _render(template: str, args: Any, kwargs: Any, auto: list[int], depth: int) -> str:
    if not isinstance(template, str):
        raise TypeError("format() needs a str template")
    if depth < 0:
        raise ValueError("Max string recursion exceeded")
    out: list[str] = []
    for literal, field, spec, conversion in _string.formatter_parser(template):
        out.append(literal)
        if field is None:
            continue
        if "." in field or "[" in field:
            raise ValueError(
                f"format field '{{{field}}}' is not allowed: fields may not read attributes "
                "or items; pass the value itself"
            )
        if field == "":
            if auto[0] < 0:
                raise ValueError("cannot switch from manual field numbering to automatic")
            field = str(auto[0])
            auto[0] += 1
        elif field.isdigit():
            if auto[0] > 0:
                raise ValueError("cannot switch from automatic field numbering to manual")
            auto[0] = -1
        value = args[int(field)] if field.isdigit() else kwargs[field]
        if conversion == "r":
            value = repr(value)
        elif conversion == "s":
            value = str(value)
        elif conversion == "a":
            value = ascii(value)
        elif conversion is not None:
            raise ValueError(f"unknown conversion '!{conversion}' in format string")
        if spec and "{" in spec:
            spec = _render(spec, args, kwargs, auto, depth - 1)
        out.append(format(value, spec or ""))
    return "".join(out)


# writes -----------------------------------------------------------------------------------------


def write_guard(obj: object) -> object:
    """`_write_`: the object itself when tenant code may store on it, else TypeError."""
    tp = type(obj)
    if tp in _WRITABLE_TYPES or tp in _tenant_classes or is_tenant_class(obj):
        return obj
    raise TypeError(f"{_kind(obj)} cannot be modified by tenant code")


def guarded_setattr(obj: object, name: object, value: object) -> None:
    setattr(write_guard(obj), check_name(name), value)


def guarded_delattr(obj: object, name: object) -> None:
    delattr(write_guard(obj), check_name(name))


# items, iteration, unpacking, in-place operators, calls -----------------------------------------


def guarded_getitem(obj: Any, index: object) -> object:
    """`_getitem_`: items carry no introspection; guarded types decide in __getitem__."""
    if id(obj) in _open_modules:
        raise TypeError("module objects are not subscriptable")
    return obj[index]


def guarded_iter(obj: Iterable[object]) -> Iterator[object]:
    return iter(obj)


def guarded_unpack_sequence(it: Iterable[object], spec: dict[str, Any], getiter: Any) -> list[Any]:
    """`_unpack_sequence_`: unpack through `getiter`, recursing into nested targets per `spec`."""
    values = list(getiter(it))
    if len(values) < spec["min_len"]:
        return values  # the interpreter raises the usual ValueError
    for index, child in spec["childs"]:
        values[index] = guarded_unpack_sequence(values[index], child, getiter)
    return values


def guarded_iter_unpack_sequence(
    it: Iterable[object], spec: dict[str, Any], getiter: Any
) -> Iterator[list[Any]]:
    """`_iter_unpack_sequence_`: `for a, (b, c) in it` with each item unpacked as above."""
    for item in getiter(it):
        yield guarded_unpack_sequence(item, spec, getiter)


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
    "@=": operator.imatmul,
}


def inplace_var(op: str, target: object, value: object) -> object:
    """`_inplacevar_`: `x += y` and friends on names (RestrictedPython refuses them elsewhere)."""
    try:
        fn = _INPLACE[op]
    except KeyError:
        raise TypeError(f"in-place operator {op!r} is not supported") from None
    return fn(target, value)


def guarded_apply(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    """`_apply_`: calls written with *args or **kwargs; the callee is already guarded."""
    return fn(*args, **kwargs)


# classes ----------------------------------------------------------------------------------------


def tenant_class(name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any) -> type:
    """`__metaclass__`: every tenant `class` statement ends here; it vets bases and records the
    class so that its instances become readable and writable."""
    if kw:
        raise TypeError(f"class {name}: class keywords {sorted(kw)} are not allowed")
    for base in bases:
        if not isinstance(base, type):
            raise TypeError(f"class {name}: base {base!r} is not a class")
        if not (
            base in DATA_TYPES
            or base in _tenant_classes
            or _is_safe_class(base)
            or issubclass(base, Exception)
        ) or issubclass(base, type):
            raise TypeError(f"class {name}: subclassing {base.__name__!r} is not allowed")
    cls = type(name, bases, namespace)
    _tenant_classes.add(cls)
    return cls


def super_init(obj: object) -> object:
    """`_super_init_`: `super().__init__` inside a tenant class method, and nothing else."""
    if type(obj) is not super or cast(Any, obj).__thisclass__ not in _tenant_classes:
        raise TypeError("super().__init__ is only available inside a tenant class's methods")
    return obj.__init__  # type: ignore[misc]


def safe_type(*args: object) -> type:
    """`type(x)` with one argument; 3-argument type() and metaclasses are refused."""
    if len(args) != 1:
        raise TypeError("type() takes exactly one argument here; use a class statement")
    tp = type(args[0])
    if issubclass(tp, type):
        raise TypeError("type() of a class is not available; use issubclass() or 'is'")
    return tp


# print ------------------------------------------------------------------------------------------


def make_print_collector(emit: Callable[[str], None]) -> type:
    """`_print_`: RestrictedPython rewrites `print(...)` into `_print_(_getattr_)._call_print(...)`
    per scope and `printed` into `_print()`. Each call reaches `emit` once, without the newline."""

    class PrintCollector:
        __slots__ = ("parts",)

        def __init__(self, _getattr: object = None) -> None:
            self.parts: list[str] = []

        def __call__(self) -> str:
            return "".join(self.parts)

        def _call_print(
            self, *objects: object, sep: str | None = " ", end: str | None = "\n",
            file: object = None, flush: bool = False,
        ) -> None:  # fmt: skip
            if file is not None:
                raise TypeError("print(file=...) is not available in tenant code")
            text = (" " if sep is None else sep).join(str(o) for o in objects)
            text += "\n" if end is None else end
            self.parts.append(text)
            emit(text[:-1] if text.endswith("\n") else text)

    return PrintCollector
