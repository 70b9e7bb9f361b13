"""Deploy-time import check: every module a worker imports must be one the sandbox offers.

Host side, in the thread that compiles a worker (`compile_worker`). Under a restricted policy
the sandbox's `__import__` (sandbox_policy.namespace) resolves only the runtime's API modules
(`workers`, `asyncio`), the vetted standard modules the policy lists (`Policy.modules`, and the
packages holding them, `urllib` for `urllib.parse`), and the worker's own modules. Imports are
static statements, so a worker that names anything else would fail with ImportError on every
request; this check refuses it when it is loaded or deployed instead, as a `CompileError` whose
entries name the module, the line and what may be imported.

Decision: an import inside a `try:` whose handlers catch ImportError (or ModuleNotFoundError,
Exception, BaseException) is the tenant's own fallback and is not checked. Relative imports are
refused, as the sandbox refuses them. A trusted policy (`restricted=False`) is not checked.
The check costs one parse per module source, remembered by source hash and policy version; a
large module's parse runs where its compile runs (`compile_process`: in the helper process, in
the same call as the compile, or alone when the compile came from the cache), so that it never
holds the host's GIL for long.
"""

from __future__ import annotations

import ast
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping

from dynworkers.sandbox_policy import Policy

#: what runtime.sandbox.tenant hands the namespace as `api_modules` (tests pin the two together)
API_MODULES = frozenset({"workers", "asyncio"})
#: handler types that make an import inside their `try:` optional
FALLBACK_HANDLERS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
#: (line, name, names the sandbox must resolve for it) for each checked import of a source
_Import = tuple[int, str, tuple[str, ...]]
Imports = tuple[_Import, ...]
_SEEN: OrderedDict[str, tuple[_Import, ...]] = OrderedDict()
_SEEN_MAX = 4096


def importable(policy: Policy, own: frozenset[str]) -> frozenset[str]:
    """Every module name a tenant with modules `own` may import under `policy`."""
    packages = {name.rsplit(".", 1)[0] for name in policy.modules if "." in name}
    return API_MODULES | policy.modules | packages | own


def refusals(
    modules: Mapping[str, str], policy: Policy, scanner: Callable[[str], Imports] | None = None
) -> list[tuple[str, int | None, str]]:
    """(module, line, message) for each import the sandbox would refuse; [] when none.

    `scanner` parses a source the cache has not seen (default: `scan`, in this thread)."""
    if not policy.restricted:
        return []
    allowed = importable(policy, frozenset(modules))
    offered = ", ".join(sorted(API_MODULES | policy.modules))
    problems: list[tuple[str, int | None, str]] = []
    for module, source in modules.items():
        for line, shown, needed in _imports(source, policy.version, scanner or scan):
            missing = [name for name in needed if name not in allowed]
            if shown == ".":
                message = "relative imports are not supported; import tenant modules by name"
            elif missing:
                message = (
                    f"module {missing[0]!r} is not allowed here: a tenant may import its own "
                    f"modules and {offered} (the policy decides)"
                )
            else:
                continue
            problems.append((module, line, message))
    return problems


def scan(source: str) -> Imports:
    """The checked imports of one source: one parse; () when it does not parse (the compiler
    reports that, with its line)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ()
    return tuple(_ImportVisitor().collect(tree))


def remember(source: str, policy_version: str, found: Imports) -> None:
    """Keep a scan made elsewhere (the compile helper) so that the check needs no parse."""
    _SEEN[_key(source, policy_version)] = found
    if len(_SEEN) > _SEEN_MAX:
        _SEEN.popitem(last=False)


def _key(source: str, policy_version: str) -> str:
    return hashlib.sha256(
        f"{policy_version}\0{source}".encode("utf-8", "surrogatepass")
    ).hexdigest()


def _imports(source: str, policy_version: str, scanner: Callable[[str], Imports]) -> Imports:
    key = _key(source, policy_version)
    found = _SEEN.get(key)
    if found is not None:
        _SEEN.move_to_end(key)
        return found
    found = scanner(source)
    remember(source, policy_version, found)
    return found


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[_Import] = []

    def collect(self, tree: ast.AST) -> list[_Import]:
        self.visit(tree)
        return self.found

    def visit_Try(self, node: ast.Try) -> None:
        if any(_is_fallback(handler) for handler in node.handlers):
            for child in node.handlers + node.orelse + node.finalbody:
                self.visit(child)  # the guarded body is the tenant's own fallback
            return
        self.generic_visit(node)

    visit_TryStar = visit_Try  # type: ignore[assignment]

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            # `import a.b` needs `a.b`, and binds `a`, which must resolve too
            top = alias.name.split(".")[0]
            self.found.append((node.lineno, alias.name, (alias.name, top)))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.found.append((node.lineno, ".", ()))
        elif node.module:
            self.found.append((node.lineno, node.module, (node.module,)))


def _is_fallback(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type
    names = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
    return any(isinstance(n, ast.Name) and n.id in FALLBACK_HANDLERS for n in names)
