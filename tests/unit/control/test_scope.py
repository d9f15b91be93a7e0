"""Scopes of pauses and freeze windows: what each covers, and the errors for what is not one."""

from __future__ import annotations

import pytest

from daemon.scope import Scope, ScopeKind
from daemon.target import Target

WEB = Target("shop", "web")
LEDGER = Target("pay", "ledger")


@pytest.mark.parametrize(
    ("text", "covered", "not_covered"),
    [
        ("all", ("any-rule", [WEB]), None),
        ("namespace:shop", ("r", [WEB]), ("r", [LEDGER])),
        ("deployment:shop/web", ("r", [LEDGER, WEB]), ("r", [Target("shop", "api")])),
        ("rule:error-rate", ("error-rate", [WEB]), ("latency", [WEB])),
    ],
)
def test_a_scope_covers_what_it_names_and_nothing_else(
    text: str, covered: tuple[str, list[Target]], not_covered: tuple[str, list[Target]] | None
) -> None:
    scope = Scope.parse(text)
    assert str(scope) == text
    assert scope.covers(*covered)
    if not_covered is not None:
        assert not scope.covers(*not_covered)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("everything", "unknown scope 'everything': expected all, namespace:NS"),
        ("namespace:", "scope 'namespace' needs a value"),
        ("all:x", "scope 'all' takes no value"),
        ("deployment:web", "deployment scope 'web': expected NAMESPACE/NAME"),
    ],
)
def test_a_bad_scope_is_refused_naming_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scope.parse(text)


def test_kinds_are_the_four_the_cli_offers() -> None:
    assert [k.value for k in ScopeKind] == ["all", "namespace", "deployment", "rule"]
