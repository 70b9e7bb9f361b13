"""A tenant directory as wrangler's: JSONC, the keys read, the ones warned about, .dev.vars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynworkers.runtime.daemon.deployments import Deployments, InvalidTenant, read_directory
from dynworkers.runtime.daemon.wrangler import (
    WRANGLER_MODULE,
    WranglerError,
    config_of,
    read_worker_directory,
    strip_jsonc,
)

ENTRY = "from workers import Response, WorkerEntrypoint\n"


def worker(root: Path, config: str, file: str = "wrangler.jsonc", **modules: str) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / file).write_text(config)
    for name, source in (modules or {"entry": ENTRY}).items():
        (root / "src" / f"{name}.py").write_text(source)
    return root


@pytest.mark.parametrize(
    ("jsonc", "expected"),
    [
        ('{"a": 1, // one\n "b": 2}', {"a": 1, "b": 2}),
        ('{"a": /* inline */ 1}', {"a": 1}),
        ('{"a": [1, 2,],}', {"a": [1, 2]}),
        ('{"a": [1, 2, /* c */ ], // x\n}', {"a": [1, 2]}),
        ('{"u": "http://x//y", "s": "/* no */", "c": ",]"}', {"u": "http://x//y", "s": "/* no */", "c": ",]"}),  # noqa: E501
        ('{"q": "say \\"hi\\" // still a string",}', {"q": 'say "hi" // still a string'}),
        ('{"a": "\\\\", "b": 2,}', {"a": "\\", "b": 2}),
    ],
)  # fmt: skip
def test_jsonc_comments_and_trailing_commas_go_strings_stay(jsonc: str, expected: object) -> None:
    assert json.loads(strip_jsonc(jsonc)) == expected


def test_jsonc_errors_keep_their_line_numbers() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads(strip_jsonc('{\n/* a\nb */\n"a": 1\n"b": 2}'))
    assert caught.value.lineno == 5
    with pytest.raises(WranglerError, match="never closed"):
        strip_jsonc('{"a": 1 /* open')


CLOUDFLARE_JSONC = """{
  "$schema": "./node_modules/wrangler/config-schema.json",
  "name": "hello-python",
  "main": "src/entry.py",
  // Set this to today's date
  "compatibility_date": "2025-11-02",
  "compatibility_flags": ["python_workers", "python_workflows"],
  "vars": {"API_HOST": "example.com", "RETRIES": 3},
  "kv_namespaces": [
    {"binding": "FOO", "id": "0f2ac74b498b48028cb68387c421e279"},
    {"binding": "CACHE"},
  ],
  "workflows": [
    {"name": "workflows-demo", "binding": "MY_WORKFLOW", "class_name": "PythonWorkflowStarter"},
  ],
  "triggers": {"crons": ["*/5 * * * *", "0 2 * * *"]},
  "limits": {"cpu_ms": 50},
  "observability": {"enabled": true},
  "d1_databases": [],
}"""


def test_a_cloudflare_config_is_read_and_unsupported_keys_are_named(tmp_path: Path) -> None:
    folder = worker(tmp_path / "acme", CLOUDFLARE_JSONC, entry=ENTRY, util="x = 1\n")
    modules = read_worker_directory(folder)
    assert sorted(modules) == [WRANGLER_MODULE, "entry", "util"]  # flat, as they are imported
    config = config_of(modules)
    assert config is not None
    assert config.main_module == "entry" and config.main == "src/entry.py"
    assert config.vars == {"API_HOST": "example.com", "RETRIES": 3}
    assert config.kv == {"FOO": "0f2ac74b498b48028cb68387c421e279", "CACHE": "CACHE"}
    assert config.workflows == {
        "MY_WORKFLOW": {"class_name": "PythonWorkflowStarter", "name": "workflows-demo"}
    }
    assert config.crons == ["*/5 * * * *", "0 2 * * *"]
    assert config.cpu_ms == 50
    assert config.compatibility_date == "2025-11-02"
    assert config.compatibility_flags == ["python_workers", "python_workflows"]
    assert config.unsupported == ["d1_databases", "observability"]
    assert config.secrets == {}  # .dev.vars only in dev


def test_toml_and_json_are_read_alike(tmp_path: Path) -> None:
    toml = 'name = "t"\nmain = "src/entry.py"\n[vars]\nA = "1"\n[[kv_namespaces]]\nbinding = "KV"\nid = "n"\n[triggers]\ncrons = ["0 * * * *"]\n'  # noqa: E501
    from_toml = config_of(read_worker_directory(worker(tmp_path / "a", toml, "wrangler.toml")))
    as_json = '{"name": "t", "main": "src/entry.py", "vars": {"A": "1"}, "kv_namespaces": [{"binding": "KV", "id": "n"}], "triggers": {"crons": ["0 * * * *"]}}'  # noqa: E501
    from_json = config_of(read_worker_directory(worker(tmp_path / "b", as_json, "wrangler.json")))
    assert from_toml is not None and from_json is not None
    assert from_toml.__dict__ | {"file": ""} == from_json.__dict__ | {"file": ""}


def test_dev_vars_supply_secrets_only_when_asked(tmp_path: Path) -> None:
    folder = worker(tmp_path / "w", '{"main": "src/entry.py"}')
    (folder / ".dev.vars").write_text('# secrets\nAPI_KEY="abc=def"\nexport TOKEN=t0k\n\n')
    assert config_of(read_worker_directory(folder)).secrets == {}  # type: ignore[union-attr]
    dev = config_of(read_worker_directory(folder, dev=True))
    assert dev is not None and dev.secrets == {"API_KEY": "abc=def", "TOKEN": "t0k"}
    (folder / ".dev.vars").write_text("not a line\n")
    with pytest.raises(WranglerError, match=r"\.dev\.vars:1: write NAME=value"):
        read_worker_directory(folder, dev=True)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"main": "src/missing.py"}', "does not exist"),
        ('{"main": "../entry.py"}', "inside the worker directory"),
        ('{"main": "src/entry.js"}', "must name a .py file"),
        ('{"kv_namespaces": [{"binding": "my-kv"}]}', "must be a name like MY_KV"),
        ('{"workflows": [{"binding": "W"}]}', "class_name must name"),
        ('{"triggers": {"crons": ["* * * *"]}}', "must have 5 fields"),
        ('{"triggers": {"crons": ["61 * * * *"]}}', "not a valid cron"),
        ('{"limits": {"cpu_ms": "fast"}}', "cpu_ms must be"),
        ('{"vars": {"A": 1}, "kv_namespaces": [{"binding": "A"}]}', "bound twice"),
        ('{"a": 1,, }', "not valid JSON"),
        ("[1]", "must hold an object"),
    ],
)
def test_a_bad_config_is_refused_naming_the_file_and_key(
    tmp_path: Path, config: str, message: str
) -> None:
    folder = worker(tmp_path / "acme", config)
    with pytest.raises(WranglerError, match=message) as caught:
        read_worker_directory(folder)
    assert "wrangler.jsonc" in str(caught.value)
    with pytest.raises(InvalidTenant, match="tenant directory 'acme'"):
        read_directory(folder)


def test_without_a_wrangler_file_a_directory_reads_as_before(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "main.py").write_text("x = 1\n")
    assert read_worker_directory(folder) == {"main": "x = 1\n"}


def test_the_config_is_part_of_the_version_and_main_comes_from_it(tmp_path: Path) -> None:
    code = tmp_path / "tenants"
    worker(code / "acme", '{"main": "src/entry.py", "vars": {"A": 1}}', entry=ENTRY, util="")
    deployments = Deployments(tmp_path / "state", code)
    deployments.load()
    (first,), _ = deployments.scan()
    assert first.main_module == "entry"  # two modules, none named main: the config says
    deployments.activate(first)
    (code / "acme" / "wrangler.jsonc").write_text('{"main": "src/entry.py", "vars": {"A": 2}}')
    (second,), _ = deployments.scan()
    assert second.version != first.version  # a config change alone redeploys
    deployments.activate(second)
    again = Deployments(tmp_path / "state", code)  # stored and read back with its config
    again.load()
    stored = config_of(dict(again.current["acme"].modules))
    assert stored is not None and stored.vars == {"A": 2}
