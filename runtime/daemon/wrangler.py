"""A worker directory as wrangler's: `wrangler.jsonc`, `wrangler.json` or `wrangler.toml`.

Host side, wherever a tenant directory is read (the daemon's event loop at start and on SIGHUP,
`dynworkers dev`'s reloads, the CLI). Owns the reading of a wrangler file into a `WranglerConfig`:

- `main` (for example `src/entry.py`): the main module; the modules are the `*.py` files of its
  folder, named flat as they are imported (`src/util.py` is `import util`); sub-packages are not
  read. Without `main`, the directory's own `*.py` files as before (`main.py` or the only one).
- `vars`: plain values in `env`. `kv_namespaces`: `{binding, id}` -> a KV namespace of this
  tenant named by `id` (the binding name when there is no id); two bindings with one id share
  their keys, and no tenant ever sees another's. `workflows`: `{binding, class_name, name}` -> a
  workflow binding whose instances run that class. `triggers.crons`: cron expressions
  (runtime.daemon.crons). `limits.cpu_ms`: the tenant's deadline (wall time, which bounds CPU
  time), never above the daemon's own `deadline`, which an operator sets as the ceiling.
- `name`, `compatibility_date`, `compatibility_flags`, `$schema` and the pywrangler keys are
  accepted and recorded; every other key (`d1_databases`, `durable_objects`, `env`, ...) is
  named in one warning and otherwise ignored, so that a real configuration loads.
- `.dev.vars` (`KEY=value` lines, `#` comments, optional quotes) supplies secrets, read only
  when asked (by `dynworkers dev`): `dynworkers serve` never reads secrets from a code directory.

The config travels with the tenant's code as one reserved module, `__wrangler__`, holding the
normalised config as canonical JSON: it is hashed into the version, stored, exported and shared
between hosts like any module, and the daemon (runtime.daemon.tenants) builds `env` from it.

JSONC is read by `strip_jsonc` (written here, tested in tests/runtime/daemon/test_wrangler.py):
`//` and `/* */` comments and trailing commas, never touching text inside strings. Every failure
is a `WranglerError` naming the file and the key, and what to write instead.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynworkers.runtime.daemon.crons import validate
from dynworkers.runtime.errors import DynworkersError

#: the reserved module that carries a worker's wrangler config with its code
WRANGLER_MODULE = "__wrangler__"
#: the wrangler files, in the order they are looked for (wrangler's own order)
WRANGLER_FILES = ("wrangler.json", "wrangler.jsonc", "wrangler.toml")
DEV_VARS = ".dev.vars"
#: a module file: `<identifier>.py`
MODULE_FILE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\.py$")
#: keys read and recorded, but without effect here
RECORDED = frozenset(
    {"name", "compatibility_date", "compatibility_flags", "$schema", "python_modules", "rules"}
)
USED = frozenset({"main", "vars", "kv_namespaces", "workflows", "triggers", "limits"})
BINDING_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class WranglerError(DynworkersError, ValueError):
    """A wrangler file (or .dev.vars) that cannot be used; the message names the file and key."""


@dataclass
class WranglerConfig:
    file: str
    name: str = ""
    #: the `main` path as written, and the flat module name it maps to
    main: str = ""
    main_module: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    #: binding name -> KV namespace
    kv: dict[str, str] = field(default_factory=dict)
    #: binding name -> {"class_name": ..., "name": ...}
    workflows: dict[str, dict[str, str]] = field(default_factory=dict)
    crons: list[str] = field(default_factory=list)
    cpu_ms: int | None = None
    compatibility_date: str = ""
    compatibility_flags: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def to_module(self) -> str:
        """The canonical JSON kept as the `__wrangler__` module."""
        return json.dumps(self.__dict__, sort_keys=True, indent=1)

    @classmethod
    def from_module(cls, text: str) -> WranglerConfig:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            message = f"the stored {WRANGLER_MODULE} module is not a config: {exc}"
            raise WranglerError(message) from None


# --- JSONC ---------------------------------------------------------------------------------------


def strip_jsonc(text: str) -> str:
    """JSON from JSONC: comments become spaces (newlines kept, so JSON errors keep their line
    numbers) and a comma followed only by whitespace or comments before `}` or `]` is dropped."""
    out: list[str] = []
    i, n = 0, len(text)
    last_comma = -1  # index in `out` of a comma that may turn out to be trailing
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
            last_comma = -1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise WranglerError("a /* comment is never closed with */")
            out.append("".join(c if c == "\n" else " " for c in text[i : end + 2]))
            i = end + 2
        else:
            if char in "}]" and last_comma >= 0:
                out[last_comma] = " "
            if char == ",":
                last_comma = len(out)
            elif not char.isspace():
                last_comma = -1
            out.append(char)
            i += 1
    return "".join(out)


# --- reading -------------------------------------------------------------------------------------


def find_wrangler_file(folder: Path) -> Path | None:
    for name in WRANGLER_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _parse(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(strip_jsonc(text))
    except WranglerError as exc:
        raise WranglerError(f"{path}: {exc}") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON (comments and trailing commas allowed)"
        raise WranglerError(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise WranglerError(f"{path} must hold an object of settings, got {type(data).__name__}")
    return data


def _binding_name(path: Path, where: str, name: object) -> str:
    if not isinstance(name, str) or not BINDING_NAME.match(name):
        raise WranglerError(
            f"{path}: {where} binding {name!r} must be a name like MY_KV (a letter, then "
            "letters, digits and _), as the tenant reads it from env"
        )
    return name


def _entries(path: Path, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise WranglerError(f"{path}: {key} must be a list of objects")
    return entries


def _main(path: Path, main: object) -> tuple[str, Path]:
    """(flat module name, folder of the modules) for `main`."""
    if not isinstance(main, str) or not main.endswith(".py"):
        raise WranglerError(f"{path}: main must name a .py file such as src/entry.py, got {main!r}")
    relative = Path(main)
    if relative.is_absolute() or ".." in relative.parts:
        raise WranglerError(f"{path}: main {main!r} must be a path inside the worker directory")
    if not MODULE_FILE.match(relative.name):
        raise WranglerError(
            f"{path}: main {main!r}: the file name must be a Python identifier with .py"
        )
    folder = path.parent / relative.parent
    if not (folder / relative.name).is_file():
        raise WranglerError(f"{path}: main {main!r} does not exist in {path.parent}")
    return relative.stem, folder


def read_config(path: Path) -> tuple[WranglerConfig, Path]:
    """The config in the wrangler file at `path`, and the folder its modules are read from."""
    data = _parse(path)
    config = WranglerConfig(file=path.name)
    folder = path.parent
    if "main" in data:
        config.main = str(data["main"])
        config.main_module, folder = _main(path, data["main"])
    config.name = str(data.get("name", ""))
    variables = data.get("vars", {})
    if not isinstance(variables, dict):
        raise WranglerError(f"{path}: vars must be an object of names and values")
    for name, value in variables.items():
        config.vars[_binding_name(path, "vars", name)] = value
    for entry in _entries(path, data, "kv_namespaces"):
        binding = _binding_name(path, "kv_namespaces", entry.get("binding"))
        namespace = entry.get("id") or binding
        if not isinstance(namespace, str):
            raise WranglerError(f"{path}: kv_namespaces {binding}: id must be a string")
        config.kv[binding] = namespace
    for entry in _entries(path, data, "workflows"):
        binding = _binding_name(path, "workflows", entry.get("binding"))
        class_name = entry.get("class_name")
        if not isinstance(class_name, str) or not class_name.isidentifier():
            raise WranglerError(
                f"{path}: workflows {binding}: class_name must name the WorkflowEntrypoint "
                f"class of the main module, got {class_name!r}"
            )
        config.workflows[binding] = {"class_name": class_name, "name": str(entry.get("name", ""))}
    triggers = data.get("triggers", {})
    crons = triggers.get("crons", []) if isinstance(triggers, dict) else None
    if not isinstance(crons, list) or not all(isinstance(c, str) for c in crons):
        raise WranglerError(f'{path}: triggers must be {{"crons": ["*/5 * * * *", ...]}}')
    for cron in crons:
        problem = validate(cron)
        if problem is not None:
            raise WranglerError(f"{path}: triggers.crons: {problem}")
    config.crons = list(dict.fromkeys(crons))
    _limits(path, data.get("limits", {}), config)
    names = [*config.vars, *config.kv, *config.workflows]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise WranglerError(f"{path}: {twice} are bound twice (vars, kv_namespaces, workflows)")
    config.compatibility_date = str(data.get("compatibility_date", ""))
    flags = data.get("compatibility_flags", [])
    config.compatibility_flags = [str(f) for f in flags] if isinstance(flags, list) else []
    config.unsupported += sorted(set(data) - USED - RECORDED)
    if isinstance(triggers, dict):
        config.unsupported += [f"triggers.{key}" for key in sorted(set(triggers) - {"crons"})]
    return config, folder


def _limits(path: Path, limits: object, config: WranglerConfig) -> None:
    if not isinstance(limits, dict):
        raise WranglerError(f'{path}: limits must be an object such as {{"cpu_ms": 50}}')
    cpu_ms = limits.get("cpu_ms")
    if cpu_ms is not None:
        if isinstance(cpu_ms, bool) or not isinstance(cpu_ms, int) or cpu_ms < 1:
            raise WranglerError(f"{path}: limits.cpu_ms must be a whole number of ms >= 1")
        config.cpu_ms = cpu_ms
    config.unsupported += [f"limits.{key}" for key in sorted(set(limits) - {"cpu_ms"})]


def read_dev_vars(folder: Path) -> dict[str, str]:
    """The secrets in `<folder>/.dev.vars`: `NAME=value` lines; {} when there is none."""
    path = folder / DEV_VARS
    if not path.is_file():
        return {}
    secrets = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not BINDING_NAME.match(name):
            raise WranglerError(f"{path}:{number}: write NAME=value (NAME a letter, then A-Z0-9_)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        secrets[name] = value
    return secrets


def read_modules(folder: Path) -> dict[str, str]:
    """Each `<name>.py` file of one folder, by module name."""
    modules = {}
    for file in sorted(folder.iterdir()):
        if file.is_file() and MODULE_FILE.match(file.name):
            modules[file.stem] = file.read_text(encoding="utf-8")
    return modules


def read_worker_directory(folder: Path, dev: bool = False) -> dict[str, str]:
    """The modules of a tenant directory; with a wrangler file, its config as `__wrangler__`
    (and, when `dev`, the secrets of `.dev.vars` in it)."""
    path = find_wrangler_file(folder)
    if path is None:
        return read_modules(folder)
    config, modules_folder = read_config(path)
    if dev:
        config.secrets = read_dev_vars(folder)
        clash = sorted(set(config.secrets) & set(config.vars))
        if clash:
            raise WranglerError(f"{folder / DEV_VARS}: {clash} are also vars in {path.name}")
    modules = read_modules(modules_folder)
    modules.pop(WRANGLER_MODULE, None)  # reserved: only the config may carry that name
    modules[WRANGLER_MODULE] = config.to_module()
    return modules


def config_of(modules: dict[str, str]) -> WranglerConfig | None:
    """The wrangler config that travels with these modules, if any."""
    text = modules.get(WRANGLER_MODULE)
    return None if text is None else WranglerConfig.from_module(text)
