"""Settings: each default is the one on its `Settings` field, each GOLDTRAIL_* variable reaches its field, and
unusable values are refused with a message that names the variable."""

from __future__ import annotations

import msgspec
import pytest

from service.settings import Settings, SettingsError, load_settings

SECRET = "s" * 32
# The fewest variables that make settings outside the embedded default (which writes a development secret).
MINIMAL = {"GOLDTRAIL_DATABASE_URL": "sqlite:///unused.sqlite3", "GOLDTRAIL_JWT_SECRET": SECRET}
# Fields load_settings fills from the variables above, or derives from them rather than defaulting.
NOT_DEFAULTED = {"jwt_secret", "jwt_algorithms"}
WITH_DEFAULTS = [
    field
    for field in msgspec.structs.fields(Settings)
    if field.default is not msgspec.NODEFAULT and field.name not in NOT_DEFAULTED
]
# (field, a value of the variable other than the default, the value the field then holds)
SET_VALUES = [
    ("jwt_issuer", "https://issuer.example", "https://issuer.example"),
    ("jwt_audience", "goldtrail", "goldtrail"),
    ("jwt_leeway_seconds", "7", 7),
    ("account_claim", "tenant", "tenant"),
    ("max_body_bytes", "2048", 2048),
    ("max_object_depth", "3", 3),
    ("db_pool_size", "4", 4),
    ("db_timeout_seconds", "1.5", 1.5),
    ("retry_after_seconds", "9", 9),
    ("idempotency_retention_seconds", "60", 60),
    ("log_level", "debug", "DEBUG"),
    ("log_format", "Text", "text"),
    ("max_head_bytes", "4096", 4096),
    ("head_timeout_seconds", "2.5", 2.5),
    ("body_timeout_seconds", "12", 12.0),
    ("keep_alive_seconds", "0.5", 0.5),
    ("metrics_port", "9464", 9464),
    ("metrics_host", "0.0.0.0", "0.0.0.0"),
    ("integrator", "OFF", "off"),
    ("max_batch_bytes", "2048", 2048),
    ("replica_max_lag_seconds", "2.5", 2.5),
    ("replica_wait_seconds", "0.1", 0.1),
    ("replica_check_seconds", "0.2", 0.2),
]


def variable(field: str) -> str:
    return f"GOLDTRAIL_{field.upper()}"


@pytest.mark.parametrize("field", WITH_DEFAULTS, ids=lambda field: field.name)
def test_an_unset_variable_leaves_the_struct_default(field):
    assert getattr(load_settings(MINIMAL), field.name) == field.default


@pytest.mark.parametrize("field", WITH_DEFAULTS, ids=lambda field: field.name)
def test_an_empty_variable_leaves_the_struct_default(field):
    settings = load_settings({**MINIMAL, variable(field.name): ""})
    assert getattr(settings, field.name) == field.default


def test_the_derived_fields_are_what_the_key_settings_give():
    settings = load_settings(MINIMAL)
    assert (settings.jwt_secret, settings.jwt_algorithms, settings.embedded) == (SECRET, ("HS256",), False)


def test_every_defaulted_field_is_either_read_from_its_variable_or_derived():
    # Key files are checked by parsing them, in the tests of what they hold (tests/test_log_service.py);
    # standbys need a PostgreSQL primary (test_read_replicas_are_postgresql_standbys_of_a_postgresql_primary).
    keys = {"jwt_public_key_files", "jwt_jwks_file", "checkpoint_key_file", "witness_keys", "read_replica_urls"}
    assert {field.name for field in WITH_DEFAULTS} - {"embedded", *keys} == {name for name, _, _ in SET_VALUES}


def test_read_replicas_are_postgresql_standbys_of_a_postgresql_primary():
    primary = {**MINIMAL, "GOLDTRAIL_DATABASE_URL": "postgresql://goldtrail@db:5432/goldtrail"}
    urls = "postgresql://goldtrail@standby-1:5432/goldtrail, postgresql://goldtrail@standby-2/goldtrail"
    settings = load_settings({**primary, "GOLDTRAIL_READ_REPLICA_URLS": urls})
    assert settings.read_replica_urls == (
        "postgresql://goldtrail@standby-1:5432/goldtrail",
        "postgresql://goldtrail@standby-2/goldtrail",
    )
    with pytest.raises(SettingsError, match="GOLDTRAIL_READ_REPLICA_URLS needs PostgreSQL"):
        load_settings({**MINIMAL, "GOLDTRAIL_READ_REPLICA_URLS": "postgresql://goldtrail@standby-1/goldtrail"})
    with pytest.raises(SettingsError, match="GOLDTRAIL_READ_REPLICA_URLS needs PostgreSQL"):
        load_settings({**primary, "GOLDTRAIL_READ_REPLICA_URLS": "sqlite:///copy.sqlite3"})


@pytest.mark.parametrize(("field", "raw", "value"), SET_VALUES, ids=[name for name, _, _ in SET_VALUES])
def test_each_variable_sets_its_field(field, raw, value):
    assert getattr(load_settings({**MINIMAL, variable(field): raw}), field) == value


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GOLDTRAIL_JWT_LEEWAY_SECONDS", "-1", "GOLDTRAIL_JWT_LEEWAY_SECONDS must be at least 0, got -1"),
        ("GOLDTRAIL_MAX_BODY_BYTES", "1023", "GOLDTRAIL_MAX_BODY_BYTES must be at least 1024, got 1023"),
        ("GOLDTRAIL_MAX_BODY_BYTES", "1MB", "GOLDTRAIL_MAX_BODY_BYTES must be a whole number, got '1MB'"),
        ("GOLDTRAIL_MAX_OBJECT_DEPTH", "0", "GOLDTRAIL_MAX_OBJECT_DEPTH must be at least 1, got 0"),
        ("GOLDTRAIL_DB_POOL_SIZE", "0", "GOLDTRAIL_DB_POOL_SIZE must be at least 1, got 0"),
        ("GOLDTRAIL_DB_TIMEOUT_SECONDS", "0", "GOLDTRAIL_DB_TIMEOUT_SECONDS must be positive, got '0'"),
        ("GOLDTRAIL_DB_TIMEOUT_SECONDS", "x", "GOLDTRAIL_DB_TIMEOUT_SECONDS must be a number of seconds, got 'x'"),
        ("GOLDTRAIL_RETRY_AFTER_SECONDS", "0", "GOLDTRAIL_RETRY_AFTER_SECONDS must be at least 1, got 0"),
        (
            "GOLDTRAIL_IDEMPOTENCY_RETENTION_SECONDS",
            "0",
            "GOLDTRAIL_IDEMPOTENCY_RETENTION_SECONDS must be at least 1, got 0",
        ),
        ("GOLDTRAIL_MAX_HEAD_BYTES", "1000", "GOLDTRAIL_MAX_HEAD_BYTES must be at least 1024, got 1000"),
        ("GOLDTRAIL_HEAD_TIMEOUT_SECONDS", "-2", "GOLDTRAIL_HEAD_TIMEOUT_SECONDS must be positive, got '-2'"),
        ("GOLDTRAIL_BODY_TIMEOUT_SECONDS", "0", "GOLDTRAIL_BODY_TIMEOUT_SECONDS must be positive, got '0'"),
        ("GOLDTRAIL_KEEP_ALIVE_SECONDS", "x", "GOLDTRAIL_KEEP_ALIVE_SECONDS must be a number of seconds, got 'x'"),
        ("GOLDTRAIL_METRICS_PORT", "0", "GOLDTRAIL_METRICS_PORT must be at least 1, got 0"),
        ("GOLDTRAIL_METRICS_PORT", "65536", "GOLDTRAIL_METRICS_PORT must be a TCP port (1 to 65535), got 65536"),
        ("GOLDTRAIL_LOG_FORMAT", "xml", "GOLDTRAIL_LOG_FORMAT must be one of auto, json, text, got 'xml'"),
    ],
)
def test_unusable_values_are_refused_naming_the_variable_and_its_minimum(name, value, message):
    with pytest.raises(SettingsError) as refused:
        load_settings({**MINIMAL, name: value})
    assert str(refused.value) == message
