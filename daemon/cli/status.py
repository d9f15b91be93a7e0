"""``rollbackd status``: is the daemon up, what does it run, what is open — in one look.

Reads ``/readyz`` (no token needed; it carries the Kafka consumer's state and
lag), ``/api/v1/rules`` and
``/api/v1/incidents?open=true`` (scope ``read``) over the HTTP API and prints a
summary, or the three answers as one JSON document with ``--output json``.
Exit codes: 0 ready, 1 reachable but not ready (or the token was refused),
3 the daemon could not be reached.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from daemon.cli import http
from daemon.cli.common import DEFAULT_URL, EXIT_UNREACHABLE, daemon_url, echo_error, read_token, utc_time
from daemon.cli.pages import waiting_for
from daemon.incidents.record import IncidentRecord

EXIT_NOT_READY = 1


@click.command()
@click.option(
    "--url", default=daemon_url, help=f"Daemon URL (env ROLLBACKD_URL, else {DEFAULT_URL})."
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding a bearer token with scope read (default: env ROLLBACKD_TOKEN).",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per request.")
def status(url: str, token_file: Path | None, output: str, timeout: float) -> None:
    """Summarise the daemon: readiness, leadership, dry-run, rules, open incidents."""
    token = read_token(token_file)
    try:
        ready, rules, incidents = (
            http.call(url, "GET", path, token=token, timeout=timeout)
            for path in ("/readyz", "/api/v1/rules", "/api/v1/incidents?open=true")
        )
    except http.Unreachable as exc:
        echo_error(f"cannot reach the daemon at {url}: {exc}")
        sys.exit(EXIT_UNREACHABLE)
    if output == "json":
        doc = {"url": url, "ready": ready.body, "rules": rules.body, "incidents": incidents.body}
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _print(url, ready, rules, incidents)
    if not (ready.ok and rules.ok and incidents.ok):
        sys.exit(EXIT_NOT_READY)


def _print(url: str, ready: http.Answer, rules: http.Answer, incidents: http.Answer) -> None:
    body = ready.body if isinstance(ready.body, dict) else {}
    state = click.style("ready", fg="green") if ready.ok else click.style("NOT READY", fg="red", bold=True)
    click.echo(f"rollbackd at {url}: {state}")
    for name, value in sorted(body.get("checks", {}).items()):
        mark = "ok" if value == "ok" else click.style(str(value), fg="red")
        click.echo(f"  {name:<11} {mark}")
    if "leader" in body:
        click.echo(f"  {'leader':<11} {'this replica' if body['leader'] else 'another replica (standby)'}")
    if body.get("dry_run"):
        click.secho("  DRY RUN: rollbacks change nothing (the daemon log says why)", fg="yellow", bold=True)
    for p in (body.get("automation") or {}).get("pauses", []):
        click.secho(
            f"  PAUSED: automated rollback for {p['scope']} by {p['created_by']} ({p['reason']})"
            f" until {utc_time(p['until'])} [pause {p['id']}; rollbackd resume {p['id']}]",
            fg="yellow", bold=True,
        )  # fmt: skip
    for name, source in sorted(body.get("sources", {}).items()):
        _print_source(name, source)
    _print_rules(rules)
    _print_incidents(incidents)


def _print_source(name: str, source: dict[str, Any]) -> None:
    """A supervised source (the Kafka consumer): green while running, red and why otherwise."""
    lag = source.get("lag")
    line = f"  {name}: {source.get('state')} since {source.get('since')}, lag {'?' if lag is None else lag}"
    line += f", {source.get('restarts', 0)} restart(s)"
    if source.get("state") == "running":
        click.echo(line)
        return
    click.secho(line, fg="red", bold=True)
    if source.get("error"):
        click.secho(f"    {source['error']}", fg="red")


def _refused(what: str, answer: http.Answer) -> None:
    detail = answer.body.get("detail") if isinstance(answer.body, dict) else answer.body
    hint = " (give --token-file or ROLLBACKD_TOKEN with scope read)" if answer.status in (401, 403) else ""
    click.secho(f"{what}: HTTP {answer.status}: {detail}{hint}", fg="red")


def _print_rules(rules: http.Answer) -> None:
    if not rules.ok:
        _refused("rules", rules)
        return
    r = rules.body
    count = r.get("rule_count", 0)
    line = f"rules: {count} loaded ({len(r.get('thresholds', []))} thresholds, {len(r.get('decisions', []))} decisions)"
    click.echo(f"{line}, last reload {r.get('last_reload_at') or 'never'}")
    if r.get("last_reload_ok") is False:
        click.secho(f"  LAST RELOAD FAILED (previous rules in force): {r.get('last_error')}", fg="red")


def _print_incidents(incidents: http.Answer) -> None:
    if not incidents.ok:
        _refused("incidents", incidents)
        return
    records = [IncidentRecord.from_json(d) for d in incidents.body.get("incidents", [])]
    click.echo(f"open incidents: {len(records)}")
    for r in records:
        targets = ", ".join(r.targets) or "-"
        ack = f" ack by {r.acknowledged_by}" if r.acknowledged_by else " NOT ACKNOWLEDGED"
        needs = f" needs {waiting}" if (waiting := waiting_for(r)) else ""
        click.echo(f"  {r.id}  {r.severity.value}  {r.state.value:<18} {r.rule}  {targets}{ack}{needs}")
