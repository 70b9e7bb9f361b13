"""Attack class: make the host run tenant code by handing it an object to compare, hash, print,
collect or probe. The defence: results cross as msgpack bytes and the host decodes builtins only,
so such objects become a ResultError (or plain data), never a live object on the host."""

#: Each method returns an object whose dunder would run tenant code if the host touched it.
#: RestrictedPython refuses most dunder names at compile time; `__eq__`, `__ne__`, `__lt__`...
#: and `__init__` are the ones it admits, so they are what reaches the sandbox.
COMPARABLE = """
from workers import WorkerEntrypoint

TOUCHED = []


class Sticky:
    def __eq__(self, other):
        TOUCHED.append("eq")
        return True

    def __ne__(self, other):
        TOUCHED.append("ne")
        return False

    def __lt__(self, other):
        TOUCHED.append("lt")
        return True


class StickyDict(dict):
    def __eq__(self, other):
        TOUCHED.append("dict-eq")
        return True

    def keys(self):
        TOUCHED.append("dict-keys")
        return ["forged"]

    def items(self):
        TOUCHED.append("dict-items")
        return [("forged", 1)]


class StickyStr(str):
    def __eq__(self, other):
        TOUCHED.append("str-eq")
        return True

    def upper(self):
        TOUCHED.append("str-upper")
        return "FORGED"


class SneakyStr(str):
    def lower(self):
        TOUCHED.append("str-lower")
        return "forged"


class StickyList(list):
    def __eq__(self, other):
        TOUCHED.append("list-eq")
        return True


class Default(WorkerEntrypoint):
    def sticky(self):
        return Sticky()

    def sticky_nested(self):
        return {"ok": 1, "payload": [Sticky()]}

    def sticky_key(self):
        return {SneakyStr("key"): 1}

    def sticky_dict(self):
        return StickyDict(real=1)

    def sticky_str(self):
        return StickyStr("text")

    def sticky_list(self):
        return StickyList([1, 2])

    def touched(self):
        return list(TOUCHED)
"""

#: Each of these dunders must be refused at compile time: the host would run them on touch.
REFUSED_DUNDERS = ("__hash__", "__str__", "__repr__", "__del__", "__getattr__", "__getattribute__")

#: `REFUSED_DUNDER.format(name=...)`: a class defining one refused dunder.
REFUSED_DUNDER = """
from workers import WorkerEntrypoint


class Evil:
    def {name}(self, *args):
        return "ran on the host"


class Default(WorkerEntrypoint):
    def evil(self):
        return Evil()
"""

#: A Response subclass whose methods are tenant code: the host must get plain data, and its own
#: `text()`/`json()`, never the tenant's.
RESPONSE_SUBCLASS = """
from workers import WorkerEntrypoint, Response


class Shifty(Response):
    def text(self):
        return "tenant code ran"

    def json(self):
        return {"tenant": "code ran"}


class Default(WorkerEntrypoint):
    def fetch(self, request):
        return Shifty("shifty body")
"""
