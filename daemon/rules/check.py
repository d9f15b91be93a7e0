"""``rollbackd rules check``: schema, semantics, and the PromQL as the real ``promtool`` sees it.

Loading already finds schema and semantic errors; this adds ``promtool check
rules`` over the exported threshold rules (one group per rule, so each
PromQL error maps back to its rule) and lint warnings. Exit codes follow
promtool: 0 valid, 1 errors, 3 lint problems with ``--lint-fatal``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from daemon.rules.export import rule_groups
from daemon.rules.loader import RuleError
from daemon.rules.registry import load_ruleset
from daemon.rules.ruleset import RuleSet

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_LINT = 3
DEFAULT_PROMTOOL = "/usr/bin/promtool"
_PROMTOOL_LINE = re.compile(r'group "(?P<group>[^"]+)", rule \d+, "[^"]*": (?P<msg>.*)$')


@dataclass
class CheckReport:
    """What ``check`` found; ``exit_code`` maps it to promtool's convention."""

    ruleset: RuleSet | None
    errors: list[RuleError] = field(default_factory=list)
    warnings: list[RuleError] = field(default_factory=list)

    def exit_code(self, *, lint_fatal: bool = False) -> int:
        if self.errors:
            return EXIT_ERRORS
        if self.warnings and lint_fatal:
            return EXIT_LINT
        return EXIT_OK


def find_promtool(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("promtool") or (DEFAULT_PROMTOOL if Path(DEFAULT_PROMTOOL).is_file() else None)


def check(paths: Sequence[Path], *, promtool: str | None = None, use_promtool: bool = True) -> CheckReport:
    """Every problem in the rule files under ``paths``."""
    ruleset, errors, warnings = load_ruleset(paths)
    report = CheckReport(ruleset, list(errors), list(warnings))
    if ruleset is None or not use_promtool:
        return report
    binary = find_promtool(promtool)
    if binary is None:
        report.errors.append(
            RuleError("promtool", 0, 0, "", "promtool not found (apt-get install prometheus), or pass --no-promtool")
        )
        return report
    report.errors.extend(promtool_errors(ruleset, binary))
    return report


def promtool_errors(ruleset: RuleSet, binary: str) -> list[RuleError]:
    """PromQL problems of the threshold rules, as ``promtool check rules`` reports them."""
    exported = rule_groups(ruleset, per_rule_groups=True)
    if not exported["groups"]:
        return []
    with tempfile.TemporaryDirectory(prefix="rollbackd-check-") as tmp:
        path = Path(tmp) / "thresholds.rules.yml"
        path.write_text(yaml.safe_dump(exported, sort_keys=False))
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [binary, "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=120
        )
    if proc.returncode == 0:
        return []
    out: list[RuleError] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        found = _PROMTOOL_LINE.search(line)
        th = ruleset.threshold(found.group("group")) if found else None
        if found and th is not None:
            where = th.origin
            message = f"promtool rejects the expression: {found.group('msg')}"
            out.append(RuleError(where.file, where.line, where.column, f"{where.path}.expr", message))
    if not out:
        detail = (proc.stderr or proc.stdout).strip()[-500:]
        out.append(RuleError("promtool", 0, 0, "", f"promtool check rules failed: {detail}"))
    return out
