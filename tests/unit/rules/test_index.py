"""The index returns every rule that can match, in order, and only a few of a large set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.deploys import DeployHistory
from daemon.rules import load_ruleset
from daemon.rules.matchers import parse

from .conftest import alert

NAMES = ["A", "B", "C"]
MATCHERS = [
    'alertname="A"',
    'alertname="B"',
    'alertname=~"A|C"',
    'env="prod"',
    'env!="prod"',
    'team=~"x.*"',
    'team=""',
    'env=~".*"',
]


@settings(max_examples=60, deadline=None)
@given(
    rules=st.lists(st.lists(st.sampled_from(MATCHERS), min_size=1, max_size=3, unique=True), min_size=1, max_size=12),
    name=st.sampled_from(NAMES),
    env=st.sampled_from(["prod", "staging", None]),
    team=st.sampled_from(["xa", "y", None]),
)
def test_indexed_evaluation_equals_a_full_scan(tmp_path_factory, rules, name, env, team) -> None:  # type: ignore[no-untyped-def]
    body = "apiVersion: rollbackd/v1\nchannels: {s: {slack: '#s'}}\nrouting: {P2: [s]}\ndecisions:\n"
    for i, ms in enumerate(rules):
        body += f"  - {{name: r{i}, match: {ms!r}, severity: P2, action: notify, continue: true}}\n"
    path = tmp_path_factory.mktemp("idx") / "r.yaml"
    path.write_text(body)
    rs, errors, _ = load_ruleset([path])
    if rs is None:  # contradictory matcher sets are rejected at load; nothing to compare
        assert all("can never match" in e.message for e in errors)
        return
    labels = {k: v for k, v in (("env", env), ("team", team)) if v is not None}
    got = [d.rule for d in rs.evaluate(alert(name, **labels), DeployHistory())]
    full = {**labels, "alertname": name}
    expected = [f"r{i}" for i, ms in enumerate(rules) if all(parse(m).matches(full) for m in ms)]
    assert got == expected


def test_candidates_do_not_grow_with_unrelated_rules(write: Callable[[str, str], Path]) -> None:
    body = "apiVersion: rollbackd/v1\nchannels: {s: {slack: '#s'}}\nrouting: {P2: [s]}\ndecisions:\n"
    for i in range(2000):
        body += f"  - {{name: r{i}, match: ['alertname=\"A{i}\"'], severity: P2, action: notify}}\n"
    rs, errors, _ = load_ruleset([write("big.yaml", body)])
    assert rs is not None, errors
    candidates = list(rs._tables.index.candidates({"alertname": "A1234", "env": "prod"}))
    assert [c.name for c in candidates] == ["r1234"]
