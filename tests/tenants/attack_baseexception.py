"""Attack class: control-flow exceptions (BaseException, SystemExit, KeyboardInterrupt,
GeneratorExit) raised, caught or swallowed by tenant code, to end or wedge the sandbox loop."""

#: The names are absent from the restricted builtins: reaching for them is a NameError.
RAISE_BY_NAME = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def raise_name(self, name):
        if name == "SystemExit":
            raise SystemExit(0)
        if name == "KeyboardInterrupt":
            raise KeyboardInterrupt()
        if name == "GeneratorExit":
            raise GeneratorExit()
        raise BaseException("out")

    def catch_base(self):
        try:
            raise ValueError("x")
        except BaseException:
            return "caught with BaseException"

    def ping(self):
        return "pong"
"""

#: A bare `except:` would catch control flow; the compiler refuses it.
BARE_EXCEPT = """
def swallow():
    try:
        return 1
    except:
        return 2
"""

#: `return` in `finally:` discards the exception in flight; the compiler refuses it.
RETURN_IN_FINALLY = """
def swallow(gen):
    try:
        gen.close()
    finally:
        return "swallowed"
"""

#: Generator tricks around GeneratorExit: it must pass `except Exception`, and a generator that
#: refuses to close raises an ordinary RuntimeError the tenant may see.
GENERATORS = """
from workers import WorkerEntrypoint


def stubborn():
    while True:
        try:
            yield 1
        except Exception:
            pass


def yields_in_finally():
    try:
        yield 1
    finally:
        yield 2


def thrower():
    yield 1


class Default(WorkerEntrypoint):
    def close_stubborn(self):
        gen = stubborn()
        next(gen)
        gen.close()
        return "closed"

    def close_yields_in_finally(self):
        gen = yields_in_finally()
        next(gen)
        gen.close()
        return "closed"

    def throw_stop(self):
        gen = thrower()
        next(gen)
        gen.throw(StopIteration)
        return "thrown"

    def leave_suspended(self):
        gens = [stubborn() for i in range(100)]
        for gen in gens:
            next(gen)
        return "left"

    def ping(self):
        return "pong"
"""

#: Under `Policy.trusted()` the names exist: raising them must end only this sandbox.
TRUSTED_RAISE = """
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    def raise_name(self, name):
        raise {"SystemExit": SystemExit(0), "KeyboardInterrupt": KeyboardInterrupt(),
               "GeneratorExit": GeneratorExit(), "BaseException": BaseException("out")}[name]

    def ping(self):
        return "pong"
"""
