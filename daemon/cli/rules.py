"""``rollbackd rules check|test|export``: what an SRE runs before a rule change ships.

Exit codes follow promtool: 0 success, 1 errors (invalid rules, failed
tests), 2 wrong usage, 3 lint problems when ``--lint-fatal`` is given.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from daemon.rules.check import EXIT_ERRORS, EXIT_OK, check
from daemon.rules.export import export
from daemon.rules.registry import load_ruleset
from daemon.rules.testing import run_files

DEFAULT_PATHS = (Path("rules"),)


@click.group(name="rules")
def group() -> None:
    """Check, test and export rule files (docs/rules.md)."""


@group.command(name="check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--promtool", "promtool", default=None, help="promtool binary (default: from PATH or /usr/bin).")
@click.option("--no-promtool", is_flag=True, help="Skip the PromQL check by promtool.")
@click.option("--lint-fatal", is_flag=True, help="Exit 3 when only lint problems are found.")
def check_cmd(paths: tuple[Path, ...], promtool: str | None, no_promtool: bool, lint_fatal: bool) -> None:
    """Validate rule files: schema, semantics and PromQL. PATHS default to rules/."""
    targets = list(paths or DEFAULT_PATHS)
    click.echo(f"Checking {', '.join(str(p) for p in targets)}")
    report = check(targets, promtool=promtool, use_promtool=not no_promtool)
    for err in report.errors:
        click.echo(f"  ERROR {err}", err=True)
    for warn in report.warnings:
        click.echo(f"  WARNING {warn}", err=True)
    if report.errors:
        click.echo(f"  FAILED: {len(report.errors)} error(s)", err=True)
    elif report.ruleset is not None:
        summary = report.ruleset.summary()
        click.echo(f"  SUCCESS: {summary['thresholds']} threshold rules, {summary['decisions']} decision rules")
    sys.exit(report.exit_code(lint_fatal=lint_fatal))


@group.command(name="test")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--fail-uncovered", is_flag=True, help="Fail when a rule is exercised by no test.")
@click.option(
    "--at", "at", default=None, metavar="TIME",
    help="Start every timeline at TIME (ISO 8601, e.g. 2026-12-25T10:00:00+01:00; no offset: UTC) instead of "
    "the file's start: to test freeze windows.",
)  # fmt: skip
def test_cmd(files: tuple[Path, ...], fail_uncovered: bool, at: str | None) -> None:
    """Run rule unit tests (timeline of deploys and alerts → expected decisions)."""
    report = run_files(list(files), at=_moment(at) if at is not None else None)
    for err in report.errors:
        click.echo(f"  ERROR {err}", err=True)
    for outcome in report.outcomes:
        if outcome.ok:
            click.echo(f"  PASS  {outcome.file}: {outcome.name}")
            continue
        click.echo(f"  FAIL  {outcome.file}: {outcome.name}", err=True)
        for failure in outcome.failures:
            click.echo("        " + failure.replace("\n", "\n        "), err=True)
    uncovered = report.uncovered
    if uncovered:
        click.echo(f"  rules no test exercised: {', '.join(uncovered)}", err=True)
    failed = sum(1 for o in report.outcomes if not o.ok)
    click.echo(f"{len(report.outcomes) - failed} passed, {failed} failed")
    bad = not report.ok or (fail_uncovered and bool(uncovered))
    sys.exit(EXIT_ERRORS if bad else EXIT_OK)


def _moment(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected an ISO 8601 time such as 2026-12-25T10:00:00+01:00") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@group.command(name="export")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["prometheus", "prometheusrule"]), default="prometheus")
@click.option("--name", default="rollbackd-thresholds", help="PrometheusRule metadata.name.")
@click.option("--namespace", default=None, help="PrometheusRule metadata.namespace.")
@click.option("--label", "labels", multiple=True, help="PrometheusRule metadata label KEY=VALUE (repeatable).")
@click.option("--interval", default=None, help="Evaluation interval of the group, e.g. 30s.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None)
def export_cmd(
    *,
    paths: tuple[Path, ...],
    fmt: str,
    name: str,
    namespace: str | None,
    labels: tuple[str, ...],
    interval: str | None,
    output: Path | None,
) -> None:
    """Write the threshold rules as Prometheus rules (a rule file or a PrometheusRule)."""
    ruleset, errors, _ = load_ruleset(list(paths or DEFAULT_PATHS))
    if ruleset is None:
        for err in errors:
            click.echo(f"  ERROR {err}", err=True)
        sys.exit(EXIT_ERRORS)
    extra = dict(label.split("=", 1) for label in labels if "=" in label)
    text = export(
        ruleset,
        "prometheusrule" if fmt == "prometheusrule" else "prometheus",
        name=name,
        namespace=namespace,
        labels=extra,
        interval=interval,
    )
    if output is None:
        click.echo(text, nl=False)
    else:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(output)  # atomic: Prometheus may be watching the file
        click.echo(f"wrote {output}", err=True)
