"""`dataclasses` for tenant code, without `exec`.

Runs inside the sandbox process, in the thread that runs tenant code (built in the zygote). The
standard `dataclasses` writes `__init__`, `__repr__` and `__eq__` as source text and `exec`s it,
which tenant code may never reach. This module builds the same methods as closures over the
field list instead, so `@dataclass` classes written for CPython work unchanged for the common
options: defaults, `field(default_factory=...)`, `frozen`, `order`, `eq`, `repr`, `init`,
`kw_only`, inheritance between dataclasses, `asdict`, `astuple`, `fields`, `replace`,
`is_dataclass`. Anything else (`__post_init__` reaches a name starting with "_", `slots`,
`InitVar`) is refused with a `TypeError` that names it, never silently ignored.

Failures: `TypeError` for a bad argument or an unsupported option, `FrozenInstanceError` (an
`AttributeError`) when a frozen instance is modified.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dynworkers.sandbox_policy.guards import register_safe_type

_MISSING: Any = object()
_FIELDS = "__dataclass_fields__"


@register_safe_type
class FrozenInstanceError(AttributeError):
    """A field of a frozen dataclass was assigned or deleted."""


@register_safe_type
class Field:
    """One field: `name`, `type`, `default`, `default_factory`, `init`, `repr`, `compare`."""

    __slots__ = ("compare", "default", "default_factory", "init", "kw_only", "name", "repr", "type")

    def __init__(
        self,
        default: Any,
        default_factory: Any,
        init: bool,
        repr: bool,
        compare: bool,
        kw_only: Any,
    ) -> None:
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("field() takes default or default_factory, not both")
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare
        self.kw_only = kw_only

    def __repr__(self) -> str:
        return f"Field(name={self.name!r})"


def field(
    *,
    default: Any = _MISSING,
    default_factory: Any = _MISSING,
    init: bool = True,
    repr: bool = True,
    compare: bool = True,
    kw_only: Any = _MISSING,
) -> Any:
    return Field(default, default_factory, init, repr, compare, kw_only)


def _collect(cls: type, kw_only: bool) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        fields.update(getattr(base, _FIELDS, {}))
    annotations = inspect.get_annotations(cls)
    for name, annotation in annotations.items():
        value = cls.__dict__.get(name, _MISSING)
        item = (
            value
            if isinstance(value, Field)
            else Field(value, _MISSING, True, True, True, _MISSING)
        )
        item.name, item.type = name, annotation
        if item.kw_only is _MISSING:
            item.kw_only = kw_only
        if isinstance(item.default, list | dict | set):
            raise ValueError(
                f"mutable default {type(item.default).__name__} for field {name!r} is not "
                "allowed: use field(default_factory=...)"
            )
        if isinstance(value, Field):  # the class attribute becomes the plain default, or goes
            if item.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, item.default)
        fields[name] = item
    return fields


def _make_init(cls: type, fields: dict[str, Field]) -> Callable[..., None]:
    params = [f for f in fields.values() if f.init]
    positional = [f for f in params if not f.kw_only]
    keyword = {f.name: f for f in params}
    seen_default = False
    for item in positional:
        has_default = item.default is not _MISSING or item.default_factory is not _MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {item.name!r} follows default argument")
        seen_default = seen_default or has_default
    name = cls.__name__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(positional):
            raise TypeError(
                f"{name}() takes {len(positional)} positional arguments but {len(args)} were given"
            )
        values = dict(zip((f.name for f in positional), args, strict=False))
        for key, value in kwargs.items():
            if key not in keyword:
                raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            values[key] = value
        for item in fields.values():
            if item.name in values:
                value = values[item.name]
            elif item.default_factory is not _MISSING:
                value = item.default_factory()
            elif item.default is not _MISSING:
                value = item.default
            else:
                raise TypeError(f"{name}() missing required argument: {item.name!r}")
            object.__setattr__(self, item.name, value)

    return __init__


def dataclass(
    cls: Any = None,
    *,
    init: bool = True,
    repr: bool = True,
    eq: bool = True,
    order: bool = False,
    frozen: bool = False,
    kw_only: bool = False,
    **unsupported: Any,
) -> Any:
    """`@dataclass` or `@dataclass(frozen=True, ...)`."""
    if unsupported:
        raise TypeError(f"dataclass() options {sorted(unsupported)} are not supported here")

    def wrap(klass: Any) -> Any:
        if not isinstance(klass, type):
            raise TypeError("@dataclass decorates a class")
        if "__post_init__" in klass.__dict__:
            raise TypeError("__post_init__ is not supported here; compute values in a method")
        fields = _collect(klass, kw_only)
        methods: dict[str, Any] = {_FIELDS: fields}
        if init:
            methods["__init__"] = _make_init(klass, fields)
        if repr:
            methods["__repr__"] = _make_repr(fields)
        if eq:
            methods["__eq__"] = _make_eq(fields)
            methods["__hash__"] = _make_hash(fields) if frozen else None
        if order:
            for op, test in _ORDER.items():
                methods[op] = _make_order(fields, test)
        if frozen:
            methods["__setattr__"] = _frozen_set
            methods["__delattr__"] = _frozen_del
        for name, value in methods.items():
            setattr(klass, name, value)
        return klass

    return wrap if cls is None else wrap(cls)


def _compared(obj: Any, fields: dict[str, Field]) -> tuple[Any, ...]:
    return tuple(getattr(obj, f.name) for f in fields.values() if f.compare)


def _make_repr(fields: dict[str, Field]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields.values() if f.repr)
        return f"{type(self).__name__}({inner})"

    return __repr__


def _make_eq(fields: dict[str, Field]) -> Callable[[Any, Any], Any]:
    def __eq__(self: Any, other: Any) -> Any:
        if type(other) is not type(self):
            return NotImplemented
        return _compared(self, fields) == _compared(other, fields)

    return __eq__


def _make_hash(fields: dict[str, Field]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(_compared(self, fields))

    return __hash__


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "__lt__": lambda a, b: a < b,
    "__le__": lambda a, b: a <= b,
    "__gt__": lambda a, b: a > b,
    "__ge__": lambda a, b: a >= b,
}


def _make_order(fields: dict[str, Field], test: Callable[[Any, Any], bool]) -> Callable[..., Any]:
    def compare(self: Any, other: Any) -> Any:
        if type(other) is not type(self):
            return NotImplemented
        return test(_compared(self, fields), _compared(other, fields))

    return compare


def _frozen_set(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r} of a frozen dataclass")


def _frozen_del(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r} of a frozen dataclass")


def _fields_of(obj: Any) -> dict[str, Field]:
    fields = getattr(obj if isinstance(obj, type) else type(obj), _FIELDS, None)
    if fields is None:
        raise TypeError("must be called with a dataclass type or instance")
    return fields  # type: ignore[no-any-return]


def fields(obj: Any) -> tuple[Field, ...]:
    return tuple(_fields_of(obj).values())


def is_dataclass(obj: Any) -> bool:
    return hasattr(obj if isinstance(obj, type) else type(obj), _FIELDS)


def _plain(value: Any, factory: Callable[[Any], Any]) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return factory([(f.name, _plain(getattr(value, f.name), factory)) for f in fields(value)])
    if isinstance(value, list | tuple):
        return type(value)(_plain(v, factory) for v in value)
    if isinstance(value, dict):
        return {_plain(k, factory): _plain(v, factory) for k, v in value.items()}
    return value


def asdict(obj: Any) -> dict[str, Any]:
    _fields_of(obj)
    return _plain(obj, dict)  # type: ignore[no-any-return]


def astuple(obj: Any) -> tuple[Any, ...]:
    _fields_of(obj)
    return tuple(_plain(getattr(obj, f.name), dict) for f in fields(obj))


def replace(obj: Any, **changes: Any) -> Any:
    values = {f.name: getattr(obj, f.name) for f in fields(obj) if f.init}
    values.update(changes)
    return type(obj)(**values)


#: What `import dataclasses` offers, each built here without exec.
MEMBERS: dict[str, object] = {
    "dataclass": dataclass,
    "field": field,
    "fields": fields,
    "asdict": asdict,
    "astuple": astuple,
    "replace": replace,
    "is_dataclass": is_dataclass,
    "Field": Field,
    "FrozenInstanceError": FrozenInstanceError,
}
