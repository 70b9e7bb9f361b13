"""The rules of durable steps (`engine.rules`): durations, step configs, retry delays, limits.

Pure functions, no event loop: each test names the rule it holds. Refusals are `ValueError` or
`TypeError` whose message names the offending value (or its kind) so a tenant can fix it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from dynworkers.engine.rules import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_MS,
    MAX_PAYLOAD_BYTES,
    MAX_STEP_NAME,
    check_event_type,
    check_instance_id,
    check_size,
    check_step_name,
    duration_ms,
    retry_delay_ms,
    step_config,
)

# --- duration_ms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1, 1), (1500, 1500), (2.9, 2), (0.0, 0), (10**12, 10**12)],
)
def test_a_number_is_a_count_of_milliseconds(value: float, expected: int) -> None:
    assert duration_ms(value) == expected
    assert isinstance(duration_ms(value), int)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 millisecond", 1),
        ("250 milliseconds", 250),
        ("1 second", 1_000),
        ("10 seconds", 10_000),
        ("1.5 seconds", 1_500),
        ("1 minute", 60_000),
        ("5 minutes", 300_000),
        ("1 hour", 3_600_000),
        ("3 hours", 10_800_000),
        ("1 day", 86_400_000),
        ("2 days", 172_800_000),
        ("1 week", 604_800_000),
        ("2 weeks", 1_209_600_000),
    ],
)
def test_a_string_is_a_number_and_a_singular_or_plural_unit(text: str, expected: int) -> None:
    assert duration_ms(text) == expected


@pytest.mark.parametrize("text", ["10 SECONDS", "  10 seconds  ", "10seconds", "10 Seconds"])
def test_duration_strings_ignore_case_and_surrounding_space(text: str) -> None:
    assert duration_ms(text) == 10_000


@pytest.mark.parametrize(
    "text",
    ["", "soon", "10", "ten seconds", "10 fortnights", "-5 seconds", "5 secondss", "5 s", "1e3 ms"],
)
def test_a_string_without_a_known_unit_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        duration_ms(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "unit" in message and "seconds" in message


@pytest.mark.parametrize("value", [-1, -0.5, -(10**9)])
def test_a_negative_number_is_refused_naming_it(value: float) -> None:
    with pytest.raises(ValueError, match=str(value)):
        duration_ms(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_naming_them(value: float) -> None:
    with pytest.raises(ValueError) as caught:
        duration_ms(value)
    assert str(value) in str(caught.value)


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_a_duration(value: bool) -> None:
    with pytest.raises(TypeError, match="bool"):
        duration_ms(value)


@pytest.mark.parametrize("value", [None, [10], {"seconds": 10}, b"10 seconds"])
def test_other_types_are_refused_naming_their_type(value: object) -> None:
    with pytest.raises(TypeError) as caught:
        duration_ms(value)
    assert type(value).__name__ in str(caught.value)


def test_a_refusal_names_what_the_duration_was_for() -> None:
    with pytest.raises(ValueError, match=r"^step timeout"):
        duration_ms("whenever", "step timeout")
    with pytest.raises(ValueError, match=r"^retries delay"):
        duration_ms(-1, "retries delay")


# --- step_config ---------------------------------------------------------------------------------

DEFAULTS = {
    "retries": {"limit": 5, "delay": 10_000, "backoff": "exponential"},
    "timeout": 600_000,
    "sensitive": False,
}


def test_the_published_defaults_are_limit_5_delay_10s_exponential_timeout_10min() -> None:
    assert DEFAULTS["retries"] == DEFAULT_RETRIES
    assert DEFAULTS["timeout"] == DEFAULT_TIMEOUT_MS


@pytest.mark.parametrize("config", [None, {}, {"retries": {}}, {"retries": None}])
def test_no_config_means_the_defaults(config: Any) -> None:
    assert step_config(config) == DEFAULTS


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"retries": {"limit": 2}}, {**DEFAULTS, "retries": {**DEFAULTS["retries"], "limit": 2}}),
        ({"retries": {"limit": 0}}, {**DEFAULTS, "retries": {**DEFAULTS["retries"], "limit": 0}}),
        (
            {"retries": {"delay": "1 second"}},
            {**DEFAULTS, "retries": {**DEFAULTS["retries"], "delay": 1_000}},
        ),
        (
            {"retries": {"backoff": "linear", "delay": 50}},
            {**DEFAULTS, "retries": {"limit": 5, "delay": 50, "backoff": "linear"}},
        ),
        ({"timeout": "5 minutes"}, {**DEFAULTS, "timeout": 300_000}),
        ({"timeout": 1}, {**DEFAULTS, "timeout": 1}),
        ({"sensitive": True}, {**DEFAULTS, "sensitive": True}),
        (
            {
                "retries": {"limit": 1000, "delay": "2 days", "backoff": "constant"},
                "timeout": "1 hour",
            },
            {
                "retries": {"limit": 1000, "delay": 172_800_000, "backoff": "constant"},
                "timeout": 3_600_000,
                "sensitive": False,
            },
        ),
    ],
)
def test_a_partial_config_is_merged_over_the_defaults(
    config: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert step_config(config) == expected


def test_a_complete_config_reads_back_as_itself_and_the_input_is_not_changed() -> None:
    config = {"retries": {"limit": 3, "delay": "10 seconds"}, "timeout": "1 minute"}
    full = step_config(config)
    assert step_config(full) == full
    assert config == {"retries": {"limit": 3, "delay": "10 seconds"}, "timeout": "1 minute"}


@pytest.mark.parametrize("key", ["retry", "timeout_ms", "Retries"])
def test_an_unknown_config_key_is_refused_naming_it(key: str) -> None:
    with pytest.raises(ValueError, match=repr(key)):
        step_config({key: 1})


@pytest.mark.parametrize("key", ["limits", "max_attempts", "jitter"])
def test_an_unknown_retries_key_is_refused_naming_it(key: str) -> None:
    with pytest.raises(ValueError, match=repr(key)):
        step_config({"retries": {key: 1}})


@pytest.mark.parametrize("backoff", ["fibonacci", "Exponential", "", None, 2])
def test_a_backoff_other_than_constant_linear_exponential_is_refused(backoff: object) -> None:
    with pytest.raises(ValueError) as caught:
        step_config({"retries": {"backoff": backoff}})
    message = str(caught.value)
    assert repr(backoff) in message
    assert all(name in message for name in ("constant", "linear", "exponential"))


@pytest.mark.parametrize("limit", [-1, 1001, 2.0, "3", True, None])
def test_a_retry_limit_outside_0_to_1000_or_not_an_int_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="limit") as caught:
        step_config({"retries": {"limit": limit}})
    assert repr(limit) in str(caught.value)


@pytest.mark.parametrize("timeout", [0, "0 seconds", -5, "forever"])
def test_a_timeout_that_is_not_a_positive_duration_is_refused(timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        step_config({"timeout": timeout})


@pytest.mark.parametrize("delay", [-1, "later", math.nan])
def test_a_bad_retry_delay_is_refused(delay: object) -> None:
    with pytest.raises(ValueError, match="retries delay"):
        step_config({"retries": {"delay": delay}})


@pytest.mark.parametrize("config", [[], "retries", 5, {"retries": [1]}, {"retries": "x"}])
def test_a_config_or_retries_that_is_not_a_dict_is_a_type_error(config: object) -> None:
    with pytest.raises(TypeError):
        step_config(config)


@pytest.mark.parametrize("retries", [0, False, "", []])
def test_a_falsy_retries_that_is_not_a_dict_is_refused_not_read_as_defaults(
    retries: object,
) -> None:
    with pytest.raises(TypeError):
        step_config({"retries": retries})


# --- retry_delay_ms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("constant", [1_000, 1_000, 1_000, 1_000]),
        ("linear", [1_000, 2_000, 3_000, 4_000]),
        ("exponential", [1_000, 2_000, 4_000, 8_000]),
    ],
)
def test_retry_delay_after_attempts_1_to_4_follows_the_backoff(
    backoff: str, expected: list[int]
) -> None:
    config = step_config({"retries": {"delay": "1 second", "backoff": backoff}})
    assert [retry_delay_ms(config, attempts) for attempts in range(1, 5)] == expected


def test_the_default_config_waits_10s_then_doubles() -> None:
    config = step_config(None)
    assert [retry_delay_ms(config, n) for n in range(1, 5)] == [10_000, 20_000, 40_000, 80_000]


def test_exponential_growth_is_capped_so_a_huge_attempt_count_stays_finite() -> None:
    config = step_config({"retries": {"delay": 1, "backoff": "exponential"}})
    assert retry_delay_ms(config, 41) == 2**40
    assert retry_delay_ms(config, 1_000) == 2**40


def test_a_zero_delay_retries_at_once_under_every_backoff() -> None:
    for backoff in ("constant", "linear", "exponential"):
        config = step_config({"retries": {"delay": 0, "backoff": backoff}})
        assert [retry_delay_ms(config, n) for n in range(1, 5)] == [0, 0, 0, 0]


# --- names and sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize("instance_id", ["a", "_x", "A-b_9", "9", "a" * 100, "x-" * 50])
def test_an_instance_id_of_1_to_100_letters_digits_dash_underscore_is_accepted(
    instance_id: str,
) -> None:
    assert check_instance_id(instance_id) == instance_id


@pytest.mark.parametrize(
    "instance_id",
    ["", "-x", "a/b", "a b", "a" * 101, "a.b", "é", "a\tb", "\na", "a\n", "a" * 100 + "\n"],
)
def test_an_instance_id_outside_the_pattern_is_refused_naming_it(instance_id: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_instance_id(instance_id)
    assert repr(instance_id) in str(caught.value)


@pytest.mark.parametrize("instance_id", [None, 5, b"a", ["a"]])
def test_an_instance_id_that_is_not_a_str_is_refused(instance_id: object) -> None:
    with pytest.raises(ValueError, match="instance id"):
        check_instance_id(instance_id)


def test_a_step_name_of_256_characters_is_accepted_and_257_refused() -> None:
    assert MAX_STEP_NAME == 256
    assert check_step_name("s" * 256) == "s" * 256
    with pytest.raises(ValueError, match="257"):
        check_step_name("s" * 257)


@pytest.mark.parametrize("name", ["", None, 3, b"step"])
def test_a_step_name_must_be_a_non_empty_str(name: object) -> None:
    with pytest.raises(TypeError, match="step name"):
        check_step_name(name)


def test_an_event_type_of_256_characters_is_accepted_and_257_refused() -> None:
    assert check_event_type("e" * 256) == "e" * 256
    with pytest.raises(ValueError, match="257"):
        check_event_type("e" * 257)
    with pytest.raises(TypeError, match="event type"):
        check_event_type("")


def test_a_payload_of_1_mib_is_accepted_and_one_byte_more_refused_naming_it() -> None:
    assert MAX_PAYLOAD_BYTES == 1024 * 1024
    data = b"\0" * MAX_PAYLOAD_BYTES
    assert check_size(data, "step result") is data
    with pytest.raises(ValueError, match=r"^step result is 1048577 bytes") as caught:
        check_size(data + b"\0", "step result")
    assert "1 MiB" in str(caught.value)


def test_an_empty_payload_is_accepted() -> None:
    assert check_size(b"", "event payload") == b""


def test_durations_accept_months_and_years_as_cloudflare() -> None:
    from dynworkers.engine import rules

    assert rules.duration_ms("1 month") == 30 * 86_400_000
    assert rules.duration_ms("2 years") == 2 * 365 * 86_400_000


def test_a_step_name_with_a_control_character_is_refused() -> None:
    from dynworkers.engine import rules

    for name in ("a\\nb", "tab\\there", "nul\\x00", "del\\x7f"):
        with pytest.raises(ValueError, match="control character"):
            rules.check_step_name(name.encode().decode("unicode_escape"))
    assert rules.check_step_name("charge card #1 (retry)") == "charge card #1 (retry)"
