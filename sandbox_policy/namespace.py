"""Globals for tenant modules: safe builtins, guards and the import resolver.

Runs inside the sandbox process, in the thread that runs tenant code; one `TenantNamespace` per
sandbox (one tenant). Owns the `__import__` that tenant code sees, which resolves in order: the
API modules the runtime passes (e.g. "workers", offered as read-only proxies), the vetted
standard-module proxies the policy allows, then the tenant's own modules. Anything else is an
`ImportError` that names the module and lists what may be imported. Never raises out of
`module_globals`.
"""

from __future__ import annotations

import _strptime
import builtins
from collections.abc import Callable, Mapping
from typing import Any

from dynworkers.sandbox_policy import guards
from dynworkers.sandbox_policy.guards import register_safe_type
from dynworkers.sandbox_policy.policy import Policy
from dynworkers.sandbox_policy.proxies import PROXIES, package_proxy, proxy_module
from dynworkers.sandbox_policy.safe_builtins import make_safe_builtins, make_trusted_builtins

__all__ = ["TenantNamespace", "register_safe_type"]


class TenantNamespace:
    """Builds fresh globals for each of one tenant's modules."""

    def __init__(
        self,
        policy: Policy,
        *,
        import_tenant_module: Callable[[str], object | None],
        api_modules: Mapping[str, object],
        emit_print: Callable[[str], None],
    ) -> None:
        self.policy = policy
        self._import_tenant_module = import_tenant_module
        self._emit_print = emit_print
        restricted = policy.restricted
        # Restricted code gets read-only views: `from workers import os` must not reach a
        # module the API file happens to import.
        self._api = {
            name: proxy_module(name, mod) if restricted else mod
            for name, mod in api_modules.items()
        }
        self._proxies = {name: PROXIES[name] for name in sorted(policy.modules)}
        packages: dict[str, dict[str, object]] = {}
        for name in sorted(policy.modules):
            if "." in name:
                parent, child = name.rsplit(".", 1)
                packages.setdefault(parent, {})[child] = PROXIES[name]
        for parent, children in packages.items():  # `import urllib.parse` binds `urllib`
            self._proxies.setdefault(parent, package_proxy(parent, children))
        self._print_collector = guards.make_print_collector(emit_print)
        if restricted:
            self._builtins = make_safe_builtins(self._import)
        else:
            self._builtins = make_trusted_builtins(self._import, self._trusted_print)

    def module_globals(self, module_name: str) -> dict[str, object]:
        """Fresh globals for one tenant module, ready for `exec(code, globals)`."""
        g: dict[str, object] = {"__builtins__": self._builtins, "__name__": module_name}
        if self.policy.restricted:
            g.update(
                _getattr_=guards.guarded_getattr,
                _getitem_=guards.guarded_getitem,
                _write_=guards.write_guard,
                _getiter_=guards.guarded_iter,
                _iter_unpack_sequence_=guards.guarded_iter_unpack_sequence,
                _unpack_sequence_=guards.guarded_unpack_sequence,
                _inplacevar_=guards.inplace_var,
                _apply_=guards.guarded_apply,
                _print_=self._print_collector,
                _super_init_=guards.super_init,
                __metaclass__=guards.tenant_class,
            )
        return g

    # import --------------------------------------------------------------------------------

    def allowed_names(self) -> list[str]:
        return sorted(self._api) + sorted(self._proxies)

    def _resolve(self, name: str) -> object | None:
        if name in self._api:
            return self._api[name]
        if name in self._proxies:
            return self._proxies[name]
        module = self._import_tenant_module(name)
        if module is not None and self.policy.restricted:
            guards.register_open_module(module)
        return module

    def _import(
        self,
        name: object,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> object:
        if level:
            raise ImportError(
                f"relative import of {name or fromlist!r} is not supported; import tenant "
                "modules by their full name"
            )
        if type(name) is not str or not name:
            raise ImportError("__import__() needs a module name")
        if name == "_strptime":
            # `datetime.strptime` is C code that imports `_strptime` through the calling frame's
            # `__import__`, i.e. this one. Tenant source can never name it (the compiler refuses
            # names starting with "_"), so only that C call reaches here, and the module goes
            # back to it, not to tenant code.
            return _strptime
        parts = name.split(".")
        if any(not p.isidentifier() or p.startswith("_") for p in parts):
            raise ImportError(f"module name {name!r} is not allowed")
        module = self._resolve(name)
        if module is None and not self.policy.restricted:
            return builtins.__import__(name, globals, locals, fromlist, level)
        if module is None:
            raise ImportError(self._refusal(name), name=name)
        if fromlist or len(parts) == 1:
            return module
        # `import a.b` binds `a`: the submodule must be importable, the top one is returned.
        top = self._resolve(parts[0])
        if top is None:
            raise ImportError(self._refusal(parts[0]), name=parts[0])
        return top

    def _refusal(self, name: str) -> str:
        api = "".join(f"{n!r}, " for n in sorted(self._api))
        std = ", ".join(sorted(self._proxies)) or "no standard modules"
        return (
            f"module {name!r} is not allowed here; a tenant may import its own modules, "
            f"{api}and: {std}"
        )

    def _trusted_print(self, *objects: object, **kwargs: Any) -> None:
        if kwargs.get("file") is not None:  # trusted code may print to its own files
            builtins.print(*objects, **kwargs)
            return
        collector = self._print_collector()
        collector._call_print(*objects, **kwargs)
