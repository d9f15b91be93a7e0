"""Kafka and Prometheus connection settings: protocols derived, bad combinations refused naming the field.

``load_settings`` is the operator's way in (YAML plus environment), so every
case goes through it; errors must name the field and never echo a secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_settings
from daemon.errors import ConfigError
from daemon.sources.kafka_client import connection
from daemon.sources.prometheus_query import PrometheusQuery
from tests.fakes.tls import TestCa


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("s3cret-value\n")
    return path


def _kafka(**kafka: Any) -> Any:
    return load_settings(None, kafka={"bootstrap_servers": "b1:9096,b2:9096", **kafka}).kafka


@pytest.mark.parametrize(
    ("tls", "sasl", "protocol"),
    [(False, False, "PLAINTEXT"), (True, False, "SSL"), (False, True, "SASL_PLAINTEXT"), (True, True, "SASL_SSL")],
)
def test_the_security_protocol_follows_tls_and_sasl(password: Path, tls: bool, sasl: bool, protocol: str) -> None:
    groups: dict[str, Any] = {}
    if tls:
        groups["tls"] = {}
    if sasl:
        groups["sasl"] = {"mechanism": "SCRAM-SHA-512", "username": "u", "password": {"file": str(password)}}
    conn = connection(_kafka(**groups))
    assert conn.security_protocol == protocol
    kwargs = conn.client_kwargs()
    assert ("ssl_context" in kwargs) is tls
    assert kwargs.get("sasl_plain_password") == ("s3cret-value" if sasl else None)
    assert "s3cret" not in conn.describe()


@pytest.mark.parametrize(
    ("sasl", "message"),
    [
        ({"mechanism": "SCRAM-SHA-1", "username": "u", "password": {"env": "X"}}, "kafka.sasl.mechanism"),
        ({"mechanism": "PLAIN", "username": "u"}, "takes a username and a password"),
        ({"mechanism": "OAUTHBEARER", "username": "u", "token": {"env": "X"}}, "OAUTHBEARER takes a token"),
        ({"mechanism": "SCRAM-SHA-256", "username": "u", "password": {"file": "/a", "env": "B"}}, "exactly one"),
    ],
)
def test_bad_sasl_settings_are_refused_naming_the_field(sasl: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _kafka(sasl=sasl)
    assert "kafka.sasl" in str(caught.value)


def test_unreadable_files_are_config_errors_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.sasl\.password: secret file .* cannot be read"):
        connection(_kafka(sasl={"mechanism": "PLAIN", "username": "u", "password": {"file": str(tmp_path / "no")}}))
    with pytest.raises(ConfigError, match=r"kafka\.tls\.ca_file .*not a readable PEM CA bundle"):
        connection(_kafka(tls={"ca_file": str(tmp_path / "no-ca.pem")}))
    with pytest.raises(ConfigError, match="give both cert_file and key_file"):
        _kafka(tls={"cert_file": str(tmp_path / "c.pem")})


def test_a_client_certificate_whose_key_does_not_match_is_refused(tmp_path: Path) -> None:
    ca = TestCa.create(tmp_path / "ca")
    one, other = ca.issue(tmp_path, "one", client=True), ca.issue(tmp_path, "other", client=True)
    tls = {"ca_file": str(ca.cert), "cert_file": str(one.cert), "key_file": str(other.key)}
    with pytest.raises(ConfigError, match=r"kafka\.tls\.cert_file .* cannot load the client certificate"):
        connection(_kafka(tls=tls))
    assert connection(_kafka(tls=tls | {"key_file": str(one.key)})).security_protocol == "SSL"


def test_prometheus_takes_one_authorization_and_never_a_literal_one(password: Path) -> None:
    ref = {"file": str(password)}
    with pytest.raises(ConfigError, match="bearer_token or basic_auth, not both"):
        load_settings(None, prometheus={"url": "https://p", "bearer_token": ref,
                                        "basic_auth": {"username": "u", "password": ref}})  # fmt: skip
    with pytest.raises(ConfigError, match="set Authorization through bearer_token or basic_auth"):
        load_settings(None, prometheus={"url": "https://p", "headers": {"authorization": "Bearer x"}})
    settings = load_settings(None, prometheus={"url": "https://p", "bearer_token": ref,
                                               "headers": {"X-Scope-OrgID": "tenant-1"}})  # fmt: skip
    assert PrometheusQuery.from_settings(settings.prometheus).url == "https://p"


def test_prometheus_secrets_that_cannot_be_read_name_the_setting(tmp_path: Path) -> None:
    settings = load_settings(None, prometheus={"url": "https://p", "bearer_token": {"file": str(tmp_path / "no")}})
    with pytest.raises(ConfigError, match=r"prometheus\.bearer_token: secret file"):
        PrometheusQuery.from_settings(settings.prometheus)
