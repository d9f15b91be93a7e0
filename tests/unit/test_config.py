"""Configuration: the shipped examples are valid, and every mistake names its field.

Runs ``rollbackd config check`` as an operator would, and ``load_settings`` for
what the daemon reads at start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from daemon.cli import main
from daemon.config import load_settings
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [REPO / "config" / "rollbackd.yaml", REPO / "deploy" / "base" / "config" / "rollbackd.yaml"]


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "rollbackd.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_examples_validate(example: Path) -> None:
    settings = load_settings(example)
    assert settings.kubernetes.leader_election.enabled is True
    assert settings.store.password is not None  # a secret reference, not a value


def test_config_check_accepts_a_valid_file_whose_secrets_exist(tmp_path: Path) -> None:
    secret = tmp_path / "db-password"
    secret.write_text("s3cret\n")
    path = _write(tmp_path, {"store": {"url": "postgresql+asyncpg://u@db/x", "password": {"file": str(secret)}}})
    result = CliRunner().invoke(main, ["config", "check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "configuration is valid" in result.output
    assert "s3cret" not in result.output


def test_config_check_names_a_secret_that_cannot_be_read(tmp_path: Path) -> None:
    path = _write(tmp_path, {"slack": {"enabled": True, "token": {"file": str(tmp_path / "missing")}}})
    result = CliRunner().invoke(main, ["config", "check", "-c", str(path)])
    assert result.exit_code == 1
    assert "slack.token" in result.stderr
    assert "missing" in result.stderr


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"http": {"prot": 9797}}, "http.prot", "Extra inputs are not permitted"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
        ({"http": {"port": "ninety"}}, "http.port", "valid integer"),
        ({"http": {"port": 70000}}, "http.port", "less than or equal to 65535"),
        ({"kubernetes": {"leader_election": {"enabled": "maybe"}}}, "kubernetes.leader_election.enabled", "boolean"),
        ({"logging": {"level": "verbose"}}, "logging.level", "'debug', 'info', 'warning' or 'error'"),
        # A secret written as a literal string instead of a {file:} / {env:} reference:
        ({"slack": {"token": "xoxb-123-literal"}}, "slack.token", "valid dictionary"),
        ({"store": {"password": "hunter2"}}, "store.password", "valid dictionary"),
        ({"pagerduty": {"routing_keys": {"platform": "R0UT1NGKEY"}}}, "pagerduty.routing_keys.platform", "dictionary"),
        ({"slack": {"token": {"file": "/a", "env": "B"}}}, "slack.token", "exactly one of 'file' or 'env'"),
        ({"http": {"tokens": [{"name": "x", "sha256": "abc", "scopes": ["read"]}]}}, "http.tokens.0.sha256", "pattern"),
        ({"http": {"tokens": [{"name": "x", "sha256": "0" * 64, "scopes": ["root"]}]}}, "http.tokens.0.scopes.0", ""),
    ],
)
def test_errors_name_the_field(tmp_path: Path, data: object, field: str, problem: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(str(path))
    matching = [line for line in lines[1:] if line.strip().startswith(f"{field}:")]
    assert matching, f"no error line names {field}: {lines}"
    assert problem in matching[0]
    # A literal secret value must never be echoed back.
    for literal in ("xoxb-123-literal", "hunter2", "R0UT1NGKEY"):
        assert literal not in str(caught.value)


def test_config_check_exit_2_names_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, {"http": {"port": "ninety"}})
    result = CliRunner().invoke(main, ["config", "check", "-c", str(path)])
    assert result.exit_code == 2
    assert "http.port" in result.stderr


def test_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_settings(path)


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        {"http": {"port": 9797, "host": "127.0.0.1"}, "kubernetes": {"leader_election": {"namespace": "from-yaml"}}},
    )
    monkeypatch.setenv("ROLLBACKD_HTTP__PORT", "9898")
    monkeypatch.setenv("ROLLBACKD_KUBERNETES__LEADER_ELECTION__NAMESPACE", "from-env")
    settings = load_settings(path)
    assert settings.http.port == 9898
    assert settings.kubernetes.leader_election.namespace == "from-env"
    assert settings.http.host == "127.0.0.1"  # what the environment does not name stays as the YAML says


def test_environment_override_is_validated_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, {})
    monkeypatch.setenv("ROLLBACKD_HTTP__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"http\.port"):
        load_settings(path)


def test_secret_from_env_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _write(tmp_path, {"store": {"password": {"env": "PGPASSWORD_FOR_TEST"}}})
    settings = load_settings(path)
    assert settings.store.password is not None
    with pytest.raises(ConfigError, match="PGPASSWORD_FOR_TEST is not set"):
        settings.store.password.read()
    monkeypatch.setenv("PGPASSWORD_FOR_TEST", "pw-from-env")
    assert settings.store.password.read() == "pw-from-env"
