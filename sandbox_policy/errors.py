"""Errors of the sandbox_policy package.

Runs anywhere. The tree::

    PolicyError(ValueError)             a Policy or OsLimits whose invariants do not hold
    SourceRejected(PolicyError)         source refused before or during compilation; carries
                                        every problem found as (filename, line, message)

Errors raised to tenant code by the guards are builtin exceptions with the same meaning
(`AttributeError`, `ImportError`, `TypeError`): tenant code reads them like ordinary Python.
"""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy value is invalid; the message names the field and the allowed range."""


class SourceRejected(PolicyError):
    """Tenant source was refused. `problems` lists (filename, line or None, message)."""

    def __init__(self, problems: list[tuple[str, int | None, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(_fmt(p) for p in problems))


def _fmt(problem: tuple[str, int | None, str]) -> str:
    filename, line, message = problem
    return f"{filename}:{line}: {message}" if line else f"{filename}: {message}"
