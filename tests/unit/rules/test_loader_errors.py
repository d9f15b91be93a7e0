"""Broken rule files: every error names the file, line, column and field, and all are reported at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.clock import FakeClock
from daemon.rules import RuleLoadError, RuleRegistry, load_ruleset

from .conftest import BASE


def errors_of(path: Path) -> list[str]:
    ruleset, errors, _ = load_ruleset([path])
    assert ruleset is None
    return [str(e) for e in errors]


def test_schema_errors_name_file_line_column_field_found_and_expected(write: Callable[[str, str], Path]) -> None:
    path = write(
        "bad.yaml",
        BASE
        + """\
thresholds:
  - name: Foo
    component: App
    metric: m
    expr: up
    comparator: ">>"
    threshold: high
    for: 5 minutes
    severity: P9
""",
    )
    errors = errors_of(path)
    assert f"{path}:15:17: thresholds[0].comparator: found '>>', expected '>'" in errors[0]
    assert errors[1].startswith(f"{path}:16:16: thresholds[0].threshold: found 'high', expected a valid number")
    assert (
        errors[2]
        == f"{path}:17:10: thresholds[0].for: found '5 minutes', expected a duration such as 30s, 5m, 2h or 1h30m"
    )
    assert errors[3].startswith(f"{path}:18:15: thresholds[0].severity: found 'P9', expected 'P0'")
    assert len(errors) == 4


def test_unknown_keys_are_errors_listing_the_valid_keys(write: Callable[[str, str], Path]) -> None:
    path = write(
        "typo.yaml",
        BASE
        + """\
decisions:
  - name: down
    match: ['alertname="Down"']
    severity: P0
    action: rollback_now
    aproval: {all_of: [CTO]}
""",
    )
    [error] = errors_of(path)
    assert error.startswith(
        f"{path}:15:5: decisions[0].aproval: unknown key 'aproval'; expected one of: action, approval,"
    )


def test_missing_fields_and_cross_field_rules(write: Callable[[str, str], Path]) -> None:
    path = write(
        "missing.yaml",
        BASE
        + """\
decisions:
  - name: slow
    match: ['alertname="Slow"']
    action: rollback_within
""",
    )
    errors = errors_of(path)
    assert errors == [f"{path}:11:5: decisions[0].severity: missing required field"]
    fixed = write("fixed.yaml", path.read_text() + "    severity: P1\n")
    assert errors_of(fixed) == [f"{fixed}:11:5: decisions[0]: action rollback_within needs 'within' (e.g. within: 15m)"]


def test_semantic_errors_across_files(write: Callable[[str, str], Path], tmp_path: Path) -> None:
    write("a.yaml", BASE)
    write(
        "b.yaml",
        """\
apiVersion: rollbackd/v1
decisions:
  - name: impossible
    match: ['alertname="X"', 'alertname="Y"']
    severity: P0
    action: notify
  - name: broad
    match: ['alertname="Z"']
    severity: P1
    action: notify
  - name: narrow
    match: ['alertname="Z"', 'env="prod"']
    severity: P1
    action: notify
  - name: broad
    match: ['alertname=~"("', 'env=="x"']
    when: "value >"
    severity: P2
    action: rollback_now
    approval: {all_of: [Janitor]}
    channels: [email]
""",
    )
    b = tmp_path / "b.yaml"
    errors = errors_of(tmp_path)
    assert f"{b}:4:12: decisions[0].match: can never match: alertname cannot equal both 'X' and 'Y'" in errors
    assert any(e.startswith(f"{b}:11:5: decisions[2].match: never reached: rule 'broad'") for e in errors)
    assert f"{b}:15:11: decisions[3].name: duplicate rule 'broad'; first defined at {b}:7" in errors
    assert any(
        e.startswith(f"{b}:16:13: decisions[3].match[0]: found 'alertname=~\"(\"', invalid regular expression")
        for e in errors
    )
    assert any(
        e.startswith(f"{b}:16:31: decisions[3].match[1]: found 'env==\"x\"', expected a matcher") for e in errors
    )
    assert any(
        e.startswith(f"{b}:17:11: decisions[3].when: found 'value >', expected a valid CEL expression") for e in errors
    )
    assert any(e.startswith(f"{b}:20:24: decisions[3].approval.all_of: unknown role 'Janitor'") for e in errors)
    assert any(e.startswith(f"{b}:21:16: decisions[3].channels[0]: unknown channel 'email'") for e in errors)


def test_yaml_syntax_error_and_duplicate_keys(write: Callable[[str, str], Path]) -> None:
    broken = write("broken.yaml", "apiVersion: rollbackd/v1\nroles: [CTO\n")
    [error] = errors_of(broken)
    assert error.startswith(f"{broken}:3:1: invalid YAML")
    dup = write("dup.yaml", "apiVersion: rollbackd/v1\nroles: [CTO]\nroles: [Data Lead]\n")
    [error] = errors_of(dup)
    assert error == f"{dup}:3:1: roles: duplicate key 'roles'"


def test_wrong_api_version_is_named(write: Callable[[str, str], Path]) -> None:
    path = write("v2.yaml", "apiVersion: rollbackd/v2\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:1:13: apiVersion: found 'rollbackd/v2', expected 'rollbackd/v1'")


def test_first_load_raises_config_error_listing_every_error(write: Callable[[str, str], Path]) -> None:
    path = write("bad.yaml", "apiVersion: rollbackd/v1\nrouting: {P0: [nowhere]}\nroles: [CTO, 'bad!role']\n")
    registry = RuleRegistry([path], FakeClock())
    with pytest.raises(RuleLoadError) as info:
        registry.load()
    assert info.value.reason == "invalid_rules"
    assert [str(e) for e in info.value.errors] == [
        f"{path}:3:14: roles[1]: found 'bad!role', expected a role name of letters, digits, spaces, '_', '.', '-'"
    ]
