"""The daemon's configuration layers: defaults < TOML < DYNWORKERS_* < flags, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynworkers.runtime.daemon import ConfigError, DaemonConfig, load_config


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "dynworkers.toml"
    path.write_text(text)
    return str(path)


def test_embedded_defaults_are_loopback_sqlite_and_dot_dynworkers() -> None:
    config = load_config(None, {}, environ={})
    assert (config.host, config.port) == ("127.0.0.1", 8787)
    assert config.state_dir == ".dynworkers"
    assert config.store_url == "sqlite:///.dynworkers/engine.db"
    assert config.control_port != config.port


def test_each_layer_overrides_the_one_before(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9000\nspares = 3\ndomain = "w.example"\n')
    environ = {"DYNWORKERS_PORT": "9100", "DYNWORKERS_DRAIN_TIMEOUT": "2.5"}
    config = load_config(path, {"port": 9200, "host": None}, environ=environ)
    assert config.port == 9200  # the flag
    assert config.drain_timeout == 2.5  # the environment, typed
    assert config.spares == 3 and config.domain == "w.example"  # the file
    assert config.host == "127.0.0.1"  # a flag not given keeps the layers below


def test_unknown_key_in_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "prot = 9000\n")
    with pytest.raises(ConfigError, match=r"unknown setting .prot.*dynworkers.toml"):
        load_config(path, environ={})


def test_unknown_environment_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="DYNWORKERS_SPAERS"):
        load_config(None, environ={"DYNWORKERS_SPAERS": "2"})


def test_wrong_types_and_values_are_refused_with_the_setting_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"port .* must be int"):
        load_config(write(tmp_path, 'port = "x"\n'), environ={})
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, environ={"DYNWORKERS_PORT": "eighty"})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "port = \n"), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.toml"), environ={})
    with pytest.raises(ConfigError, match="control API needs a listener of its own"):
        DaemonConfig(port=9000, control_port=9000)
    with pytest.raises(ConfigError, match="drain_timeout"):
        DaemonConfig(drain_timeout=0)


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "max_sandboxes = 7\n")
    assert load_config(None, environ={"DYNWORKERS_CONFIG": path}).max_sandboxes == 7


def test_boolean_settings_take_true_false_from_toml_and_words_from_the_environment(
    tmp_path: Path,
) -> None:
    assert not load_config(None, {}, environ={}).expose_errors  # production: no tracebacks out
    path = write(tmp_path, "access_log = true\nexpose_errors = false\n")
    config = load_config(path, {}, environ={"DYNWORKERS_EXPOSE_ERRORS": "on"})
    assert (config.access_log, config.expose_errors) == (True, True)
    for word, value in (("1", True), ("yes", True), ("FALSE", False), ("off", False)):
        assert load_config(None, {}, environ={"DYNWORKERS_ACCESS_LOG": word}).access_log is value
    with pytest.raises(ConfigError, match=r"access_log .* must be true or false"):
        load_config(None, {}, environ={"DYNWORKERS_ACCESS_LOG": "maybe"})
    with pytest.raises(ConfigError, match=r"expose_errors .* must be true or false"):
        load_config(write(tmp_path, "expose_errors = 1\n"), {}, environ={})
    with pytest.raises(ConfigError, match="log_format must be text or json"):
        load_config(None, {}, environ={"DYNWORKERS_LOG_FORMAT": "xml"})
