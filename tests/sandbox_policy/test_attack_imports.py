"""Attack class: importing what the policy does not offer, or reaching it through what it does."""

from __future__ import annotations

import pytest

from dynworkers.sandbox_policy.errors import SourceRejected
from dynworkers.sandbox_policy.policy import KNOWN_MODULES, Policy
from dynworkers.sandbox_policy.proxies import PROXIES
from tests.sandbox_policy.tenant_harness import Tenant, run


@pytest.mark.parametrize("name", ["os", "sys", "importlib", "subprocess", "gc", "ctypes"])
def test_unlisted_modules_are_refused_with_what_is_allowed(name):
    with pytest.raises(ImportError) as info:
        run(f"import {name}")
    message = str(info.value)
    assert f"module {name!r} is not allowed here" in message
    assert "'workers'" in message and "json, math" in message


def test_importing_builtins_is_refused_at_compile_time():
    with pytest.raises(SourceRejected, match="builtins"):
        run("import builtins")


def test_from_import_of_an_unlisted_module_is_refused():
    with pytest.raises(ImportError, match="'os' is not allowed"):
        run("from os import path")


def test_dotted_import_of_a_vetted_module_submodule_is_refused():
    with pytest.raises(ImportError, match=r"'json\.decoder' is not allowed"):
        run("import json.decoder")


def test_dunder_import_is_refused_at_compile_time():
    with pytest.raises(SourceRejected, match="__import__"):
        run("os = __import__('os')")


def test_relative_import_is_refused():
    with pytest.raises(ImportError, match="relative import"):
        run("from . import helper")


@pytest.mark.parametrize("name", ["sys", "codecs", "decoder", "scanner", "JSONEncoder"])
def test_json_proxy_does_not_reexport_module_internals(name):
    with pytest.raises(ImportError, match=name):
        run(f"from json import {name}")


@pytest.mark.parametrize("module", sorted(KNOWN_MODULES))
def test_no_proxy_leaks_a_module_object(module):
    proxy = PROXIES[module]
    for member in dir(proxy):
        assert type(getattr(proxy, member)).__name__ != "module", (module, member)
    assert not hasattr(proxy, "sys") and not hasattr(proxy, "__dict__")


def test_proxy_has_no_readable_internals():
    with pytest.raises(SourceRejected):
        run("import json\nx = json._ModuleProxy__members")
    with pytest.raises(AttributeError, match="private"):
        run("import json\nx = getattr(json, '_ModuleProxy__members')")


def test_re_proxy_does_not_reexport_enum_or_functools():
    with pytest.raises(AttributeError, match="enum"):
        run("import re\nx = re.enum")


def test_api_module_exposes_only_its_public_non_module_names():
    with pytest.raises(ImportError, match="os"):
        run("from workers import os")
    with pytest.raises(AttributeError, match="os"):
        run("import workers\nx = workers.os")


def test_modules_outside_the_policy_are_refused():
    tenant = Tenant(Policy.strict())
    with pytest.raises(ImportError, match="no standard modules"):
        tenant.run("import json")


def test_collections_offers_no_namedtuple():
    tenant = Tenant(Policy.default().with_modules("collections"))
    with pytest.raises(ImportError, match="namedtuple"):
        tenant.run("from collections import namedtuple")


def test_time_offers_no_sleep():
    with pytest.raises(AttributeError, match="sleep"):
        run("import time\ntime.sleep(1)")


def test_random_is_a_private_generator_not_the_module():
    with pytest.raises(ImportError, match="SystemRandom"):
        run("from random import SystemRandom")
    with pytest.raises(AttributeError):
        run("import random\nx = random.random.im_self")


def test_uuid_offers_no_mac_address():
    tenant = Tenant(Policy.default().with_modules("uuid"))
    with pytest.raises(ImportError, match="getnode"):
        tenant.run("from uuid import getnode")


def test_tenant_module_cannot_leak_another_modules_builtins():
    with pytest.raises(AttributeError, match="private"):
        run("import helper\nb = getattr(helper, '__builtins__')", helper="x = 1\n")
