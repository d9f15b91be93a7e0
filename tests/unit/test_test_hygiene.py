"""The tests' own house rules: they never import the benchmarks, and every rule fixture is a valid rule set."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from daemon.rules.check import check
from tests.fixtures import blanks, rule_fixtures, rules_file

TESTS = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_test_module_imports_bench() -> None:
    offenders = {
        str(p.relative_to(TESTS)): sorted(n for n in _imports(p) if n == "bench" or n.startswith("bench."))
        for p in TESTS.rglob("*.py")
    }
    assert {p: names for p, names in offenders.items() if names} == {}


@pytest.mark.parametrize("name", rule_fixtures())
def test_rule_fixture_passes_rules_check(name: str, tmp_path: Path) -> None:
    """What ``rollbackd rules check`` says of the fixture, its blanks filled the way the tests fill them."""
    path = rules_file(name, tmp_path, **{key: f"Fixture{key.title()}" for key in blanks(name)})
    report = check([path], use_promtool=False)
    assert [str(e) for e in report.errors] == []
    assert report.ruleset is not None
    assert report.ruleset.summary()["decisions"] >= 1
