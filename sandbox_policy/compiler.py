"""Compile one tenant module to a code object, or say everything that is wrong with it.

Runs in the host process (the Worker Loader calls it before anything reaches a sandbox); it is
the only module in the package that imports RestrictedPython. Owns the size checks, the parse,
and the RestrictedPython transform. Fails only with `SourceRejected`, which lists every problem
as (filename, line or None, message); hostile input (deep nesting, huge literals, megabyte lines)
becomes a `SourceRejected` quickly, never a crash or a hang of the host.
"""

from __future__ import annotations

import ast
import re
import types
import warnings

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.transformer import RestrictingNodeTransformer

from dynworkers.sandbox_policy.errors import SourceRejected
from dynworkers.sandbox_policy.policy import Policy

__all__ = ["compile_module"]

_Problem = tuple[str, int | None, str]
_NEWLINES = re.compile(r"\r\n|\r|\n")
_LINE_PREFIX = re.compile(r"^Line (\d+|None): (.*)$", re.DOTALL)

#: The errors that a parse, transform or compile of hostile source may raise besides SyntaxError.
_RESOURCE_ERRORS = (RecursionError, MemoryError, ValueError, OverflowError)


class TenantTransformer(RestrictingNodeTransformer):
    """RestrictedPython's policy, tightened where our durable-execution model needs it.

    Workflow suspension and cancellation are `BaseException`s that tenant code must not swallow
    (see DESIGN.md). `except Exception` cannot catch them, but a bare `except:` would, and so
    would a `return`, `break` or `continue` in a `finally:` block, which discards the exception
    in flight. Both are refused here.

    One loosening: `super().__init__(...)` (zero-argument super only) is what every subclass of
    Exception or of an API class writes, and RestrictedPython refuses it for the leading "_".
    It compiles to `_super_init_(super())`, and that guard returns the bound `__init__` only for
    a super object whose class is a tenant class, i.e. re-initialising the tenant's own `self`.

    Async code, which Cloudflare's Python Workers are written in, compiles too; each construct's
    reason is beside its visitor. What makes all of them safe together: a coroutine's internals
    (`cr_frame`, `cr_code`, `send`, `throw`, ...) are refused by the attribute guard like every
    other interpreter internal, tenant classes cannot define `__await__`, `__aiter__`,
    `__anext__`, `__aenter__` or `__aexit__` (RestrictedPython refuses those names), so the only
    objects the async protocols ever call into are the interpreter's own coroutines and async
    generators and the runtime's `Pending`; and only the sandbox's loop (`sandbox_policy.aio`)
    drives a coroutine.
    """

    def not_allowed(self, node: ast.AST) -> None:
        # RestrictedPython names the AST class ("AnnAssign statements are not allowed"); say
        # it in the words of the language instead.
        what = _CONSTRUCTS.get(type(node).__name__, f"{type(node).__name__} statements")
        self.error(node, f"{what} {'is' if what.startswith('a ') else 'are'} not allowed")

    # async code ----------------------------------------------------------------------------------

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        # The same checks as a plain def (its name, its arguments' names, its own print scope);
        # calling it only makes a coroutine object, which the guards keep opaque.
        self.check_name(node, node.name, allow_magic_methods=True)
        self.check_function_argument_names(node)
        with self.print_info.new_print_scope():
            node = self.node_contents_visit(node)
            self.inject_print_collector(node)  # type: ignore[arg-type]
        return node

    def visit_Await(self, node: ast.Await) -> ast.AST:
        # `await x` calls type(x).__await__, which only the interpreter's coroutines and the
        # runtime's Pending define; what it yields goes to the sandbox's loop, never to tenant
        # code. The operand itself is visited, so its attribute reads stay guarded.
        return self.node_contents_visit(node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        # Iterates an async generator (the tenant's own) through __aiter__/__anext__, which
        # tenant classes cannot define. A tuple target is unpacked through the same guard as
        # in a plain `for`, by an assignment at the top of the body.
        node = self.node_contents_visit(node)
        if isinstance(node.target, ast.Tuple):
            tmp, unpack = self.gen_unpack_wrapper(node, node.target)
            node.target = tmp
            node.body.insert(0, unpack)
        return node

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        # As `with`: __aenter__/__aexit__ exist only on runtime objects, never tenant classes;
        # tuple targets are unpacked through the guard as RestrictedPython does for `with`.
        node = self.node_contents_visit(node)
        for item in reversed(node.items):
            if isinstance(item.optional_vars, ast.Tuple):
                tmp, unpack = self.gen_unpack_wrapper(node, item.optional_vars)
                item.optional_vars = tmp
                node.body.insert(0, unpack)
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        if not node.is_async:
            return super().visit_comprehension(node)  # type: ignore[return-value]
        # `async for` in a comprehension: no _getiter_ wrapper (it would call iter() on an
        # async iterable); an unpacking target would bypass the unpack guard, so it is refused.
        if not isinstance(node.target, ast.Name):
            self.error(
                node,
                "unpacking in the target of an async comprehension is not allowed; bind one "
                "name and unpack it in the expression",
            )
        return self.node_contents_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        # `x: int = 1`: an assignment plus an annotation. The annotation is an ordinary
        # expression (guarded like any other) stored in the module's or class's annotations;
        # an attribute or item target goes through the write guard as in a plain assignment.
        return self.node_contents_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        value = node.value
        if (
            node.attr == "__init__"
            and isinstance(node.ctx, ast.Load)
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "super"
            and not value.args
            and not value.keywords
        ):
            guard = ast.copy_location(ast.Name("_super_init_", ast.Load()), node)
            return ast.copy_location(ast.Call(func=guard, args=[value], keywords=[]), node)
        return super().visit_Attribute(node)  # type: ignore[return-value]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        # RestrictedPython rebuilds the class with metaclass=__metaclass__ and silently drops any
        # other keyword; refuse them so that the tenant is told rather than surprised.
        if any(k.arg != "metaclass" for k in node.keywords):
            self.error(node, f"class {node.name}: class keywords are not allowed")
        return super().visit_ClassDef(node)  # type: ignore[return-value]

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.type is None:
            self.error(node, "bare 'except:' is not allowed; write 'except Exception:'")
        return super().visit_ExceptHandler(node)  # type: ignore[return-value]

    def visit_Try(self, node: ast.Try) -> ast.AST:
        for stmt in node.finalbody:
            for bad in _escapes(stmt, in_loop=False):
                self.error(
                    bad,
                    f"'{type(bad).__name__.lower()}' inside 'finally:' is not allowed: it "
                    "discards the exception in flight",
                )
        return super().visit_Try(node)  # type: ignore[return-value]


#: AST class name -> the construct in a Python programmer's words, for refusals.
_CONSTRUCTS: dict[str, str] = {
    "TryStar": "'except*' (exception groups)",
    "Nonlocal": "'nonlocal' statements",
    "Match": "'match' statements",
    "TypeAlias": "'type' alias statements",
    "TemplateStr": "template strings (t-strings)",
    "Interpolation": "template strings (t-strings)",
    "AnnAssign": "annotated assignments",
}


def _escapes(node: ast.AST, in_loop: bool) -> list[ast.stmt]:
    """Return/break/continue statements that leave the enclosing finally block."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
        return []
    if isinstance(node, ast.Return) or (isinstance(node, ast.Break | ast.Continue) and not in_loop):
        return [node]
    found: list[ast.stmt] = []
    for child in ast.iter_child_nodes(node):
        loop = in_loop or isinstance(node, ast.For | ast.While)
        found.extend(_escapes(child, loop))
    return found


def compile_module(source: str, filename: str, policy: Policy) -> types.CodeType:
    """Compile `source` under `policy`; raise `SourceRejected` listing every problem found."""
    problems = _precheck(source, filename, policy)
    if problems:
        raise SourceRejected(problems)
    try:
        # Warnings (invalid escapes, "is" with a literal) are the tenant's business, not the
        # host's: with warnings as errors they would otherwise abort the compile.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _compile(source, filename, policy)
    except SourceRejected:
        raise
    except SyntaxError as exc:
        raise SourceRejected([(filename, exc.lineno, f"SyntaxError: {exc.msg}")]) from None
    except RecursionError:
        raise SourceRejected([(filename, None, _NESTING)]) from None
    except MemoryError:
        problem = (filename, None, "nesting too deep or module too complex to compile")
        raise SourceRejected([problem]) from None
    except (ValueError, OverflowError) as exc:
        raise SourceRejected([(filename, None, f"cannot compile: {exc}")]) from None


_NESTING = "nesting too deep: expressions or blocks are nested beyond what the compiler accepts"


def _precheck(source: object, filename: str, policy: Policy) -> list[_Problem]:
    if not isinstance(source, str):
        return [(filename, None, f"source must be str, not {type(source).__name__}")]
    problems: list[_Problem] = []
    if "\x00" in source:
        where = len(_NEWLINES.split(source[: source.index("\x00")]))
        problems.append((filename, where, "source contains a null byte"))
    try:
        size = len(source.encode("utf-8"))
    except UnicodeEncodeError:
        return [(filename, None, "source is not valid Unicode (lone surrogate)")]
    if size > policy.max_module_bytes:
        problems.append(
            (filename, None, f"module is {size} bytes; the limit is {policy.max_module_bytes}")
        )
        return problems  # do not scan a huge source line by line
    limit = policy.max_line_chars
    # Python's own line breaks only: str.splitlines() would also split at \f or \u2028.
    for number, line in enumerate(_NEWLINES.split(source), 1):
        if len(line) > limit:
            problems.append(
                (filename, number, f"line is {len(line)} characters long; the limit is {limit}")
            )
    return problems


def _compile(source: str, filename: str, policy: Policy) -> types.CodeType:
    if not policy.restricted:
        return compile(source, filename, "exec", dont_inherit=True)
    tree = ast.parse(source, filename, "exec")
    result = compile_restricted_exec(tree, filename, policy=TenantTransformer)
    if result.errors or result.code is None:
        raise SourceRejected(
            [_parse_error(filename, e) for e in result.errors]
            or [(filename, None, "RestrictedPython refused the module")]
        )
    return result.code


def _parse_error(filename: str, text: str) -> _Problem:
    match = _LINE_PREFIX.match(text)
    if not match:
        return (filename, None, text)
    number = match.group(1)
    return (filename, None if number == "None" else int(number), match.group(2))
