"""Credentials never leak into text; settings come from the environment and are validated."""

from __future__ import annotations

import dataclasses

import pytest

from fallbackbus import ConfigurationError, RabbitMqConnector, Settings
from fallbackbus.secrets import describe_error, mask_url


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("amqp://guest:s3cret@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        (
            "amqp://a:s3cret@n1:5672//;amqp://b:s3cret@n2:5672//",
            "amqp://a:***@n1:5672//;amqp://b:***@n2:5672//",
        ),
        (
            "cannot connect to amqp://guest:s3cret@h:1//: refused",
            "cannot connect to amqp://guest:***@h:1//: refused",
        ),
        (
            "postgresql://app@db/audit?password=s3cret&x=1",
            "postgresql://app@db/audit?password=***&x=1",
        ),
        ("amqp://guest@rabbit:5672//", "amqp://guest@rabbit:5672//"),
        ("amqp://rabbit:5672//", "amqp://rabbit:5672//"),
    ],
)
def test_mask_url_hides_every_password_and_keeps_the_rest(text: str, masked: str) -> None:
    assert mask_url(text) == masked


def test_mask_url_hides_a_password_that_contains_an_unencoded_at_sign() -> None:
    # kombu and redis-py split the user info at the LAST "@": this URL works, password "p@ss-word".
    masked = mask_url("amqp://guest:p@ss-word@rabbit:5672//")

    assert "ss-word" not in masked
    assert masked.endswith("@rabbit:5672//")


def test_describe_error_names_the_exception_type_and_masks_its_text() -> None:
    error = ConnectionError("amqp://guest:s3cret@h:5672// refused")

    assert describe_error(error) == "ConnectionError: amqp://guest:***@h:5672// refused"
    assert describe_error(ValueError()) == "ValueError: no detail"


def test_a_connector_never_shows_its_password() -> None:
    connector = RabbitMqConnector("amqp://guest:s3cret@a:5672//;amqp://guest:s3cret@b:5672//")

    assert connector.urls == ["amqp://guest:s3cret@a:5672//", "amqp://guest:s3cret@b:5672//"]
    assert "s3cret" not in repr(connector)
    assert "s3cret" not in connector.safe_url


def test_a_connector_given_a_non_amqp_url_raises_without_showing_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RabbitMqConnector("redis://user:s3cret@localhost:6379/0")

    assert "not an AMQP URL" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_connector_given_only_separators_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no RabbitMQ URL"):
        RabbitMqConnector(" ; ")


def test_a_connector_takes_its_timeouts_from_arguments_then_settings() -> None:
    settings = Settings(connect_timeout=3.0, confirm_timeout=4.0, breaker_cooldown=6.0)

    from_settings = RabbitMqConnector("amqp://h//", settings=settings)
    explicit = RabbitMqConnector(
        "amqp://h//", connect_timeout=0.5, confirm_timeout=1, breaker_cooldown=0, settings=settings
    )

    assert (from_settings.connect_timeout, from_settings.confirm_timeout) == (3.0, 4.0)
    assert from_settings.breaker.cooldown == 6.0
    assert (explicit.connect_timeout, explicit.confirm_timeout) == (0.5, 1)
    assert explicit.breaker.cooldown == 0


def test_settings_defaults_work_against_localhost() -> None:
    settings = Settings.from_env({})

    assert settings.rabbitmq_url == "amqp://guest:guest@localhost:5672//"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.connect_timeout == 2.0
    assert settings.replay_batch_size == 500
    assert settings.replay_lists == ("domain.events", "commands")
    assert settings.effective_celery_broker_url == settings.redis_url


def test_settings_parse_numbers_lists_and_strings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "FALLBACKBUS_RABBITMQ_URL": " amqp://u:p@h:1// ",
            "FALLBACKBUS_CONNECT_TIMEOUT": "0.25",
            "FALLBACKBUS_REPLAY_BATCH_SIZE": "42",
            "FALLBACKBUS_REPLAY_LISTS": "domain.events, events ,,commands",
            "FALLBACKBUS_CELERY_BROKER_URL": "redis://other/1",
            "FALLBACKBUS_REDIS_KEY_PREFIX": "",
        }
    )

    assert settings.rabbitmq_url == "amqp://u:p@h:1//"
    assert settings.connect_timeout == 0.25
    assert settings.replay_batch_size == 42
    assert settings.replay_lists == ("domain.events", "events", "commands")
    assert settings.effective_celery_broker_url == "redis://other/1"
    assert settings.redis_key_prefix == ""


def test_explicit_overrides_win_over_the_environment_and_none_is_ignored() -> None:
    env = {"FALLBACKBUS_CONNECT_TIMEOUT": "9"}

    assert Settings.from_env(env, connect_timeout=1.5).connect_timeout == 1.5
    assert Settings.from_env(env, connect_timeout=None).connect_timeout == 9.0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FALLBACKBUS_REPLAY_BATCH_SIZE", "many", "FALLBACKBUS_REPLAY_BATCH_SIZE: cannot parse"),
        ("FALLBACKBUS_CONNECT_TIMEOUT", "2s", "FALLBACKBUS_CONNECT_TIMEOUT: cannot parse"),
        ("FALLBACKBUS_CONNECT_TIMEOUT", "0", "FALLBACKBUS_CONNECT_TIMEOUT must be > 0"),
        ("FALLBACKBUS_REPLAY_BATCH_SIZE", "-1", "FALLBACKBUS_REPLAY_BATCH_SIZE must be > 0"),
        ("FALLBACKBUS_MAX_MESSAGE_BYTES", "0", "FALLBACKBUS_MAX_MESSAGE_BYTES must be > 0"),
        ("FALLBACKBUS_BREAKER_COOLDOWN", "-1", "FALLBACKBUS_BREAKER_COOLDOWN must be >= 0"),
        ("FALLBACKBUS_REPLAY_LISTS", ",", "FALLBACKBUS_REPLAY_LISTS must name at least one"),
    ],
)
def test_a_malformed_setting_raises_configuration_error_naming_the_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({variable: value})


def test_a_zero_breaker_cooldown_is_allowed() -> None:
    assert Settings.from_env({"FALLBACKBUS_BREAKER_COOLDOWN": "0"}).breaker_cooldown == 0


def test_blank_variables_fall_back_to_the_default() -> None:
    assert Settings.from_env({"FALLBACKBUS_CONNECT_TIMEOUT": "  "}).connect_timeout == 2.0


def test_settings_are_frozen_and_with_returns_a_validated_copy() -> None:
    settings = Settings()

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.connect_timeout = 1  # type: ignore[misc]
    assert settings.with_(connect_timeout=1.0).connect_timeout == 1.0
    assert settings.connect_timeout == 2.0
    with pytest.raises(ConfigurationError):
        settings.with_(confirm_timeout=0)


def test_settings_default_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALLBACKBUS_REPLAY_INTERVAL", "7.5")

    assert Settings.from_env().replay_interval == 7.5
