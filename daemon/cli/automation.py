"""``rollbackd pause | resume | pauses | shadow report``: stop, restart and watch the automation over the API.

Stopping every automated rollback is one command, ``rollbackd pause --all
--reason TEXT``; it holds on every replica from its commit on and ends by itself
(``--for``, default one hour). Pausing and resuming need a token with scope
``control`` (or ``admin``); listing and the shadow report scope ``read``. The
token comes from ``--token-file`` or ``ROLLBACKD_TOKEN``, as for the responders'
commands.
"""

from __future__ import annotations

import re
from typing import Any

import click

from daemon.cli.common import utc_time
from daemon.cli.incidents import _api, _options, _show  # one client and one set of options for every API command

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``7d`` in seconds; click's error naming the forms otherwise."""
    m = _DURATION.match(text)
    if m is None:
        raise click.BadParameter(f"{text!r}: expected a number and a unit, e.g. 30m, 2h, 7d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _scope(all_: bool, namespace: str | None, deployment: str | None, rule: str | None) -> str:
    given = [s for s in (
        "all" if all_ else None,
        f"namespace:{namespace}" if namespace else None,
        f"deployment:{deployment}" if deployment else None,
        f"rule:{rule}" if rule else None,
    ) if s]  # fmt: skip
    if len(given) != 1:
        raise click.UsageError("give exactly one of --all, --namespace NS, --deployment NS/NAME, --rule NAME")
    if deployment is not None and "/" not in deployment:
        raise click.BadParameter(f"{deployment!r}: expected NAMESPACE/NAME", param_hint="--deployment")
    return given[0]


def _pause_line(p: dict[str, Any]) -> str:
    return (
        f"pause {p['id']}: automated rollback paused for {p['scope']} by {p['created_by']} "
        f"({p['reason']}) until {utc_time(p['until'])}"
    )


@click.command()
@click.option("--all", "all_", is_flag=True, help="Every target and rule.")
@click.option("--namespace", default=None, help="Every target in this namespace.")
@click.option("--deployment", default=None, help="One target, NAMESPACE/NAME.")
@click.option("--rule", default=None, help="Every decision of this rule.")
@click.option("--reason", required=True, help="Why (recorded, posted to Slack, shown with every held decision).")
@click.option("--for", "for_", default="1h", show_default=True, help="How long: 30m, 2h, 7d (at most 7d).")
@_options
@click.pass_context
def pause(
    ctx: click.Context, *, all_: bool, namespace: str | None, deployment: str | None, rule: str | None, reason: str,
    for_: str,
) -> None:  # fmt: skip
    """Pause automated rollback: decisions are still made and notified, nothing is written to the cluster."""
    body = {"scope": _scope(all_, namespace, deployment, rule), "reason": reason, "for_s": parse_duration(for_)}
    data = _api(ctx).call("POST", "/api/v1/automation/pauses", body)
    _show(ctx, data, _pause_line(data))


@click.command()
@click.argument("pause_id", required=False)
@click.option("--all", "all_", is_flag=True, help="End every active pause.")
@_options
@click.pass_context
def resume(ctx: click.Context, pause_id: str | None, all_: bool) -> None:
    """End a pause (PAUSE_ID) or every pause (--all): automated rollback runs again."""
    if (pause_id is None) == (not all_):
        raise click.UsageError("give a PAUSE_ID or --all")
    path = "/api/v1/automation/resume" if all_ else f"/api/v1/automation/pauses/{pause_id}/resume"
    data = _api(ctx).call("POST", path)
    ended = data["resumed"]
    text = "\n".join(f"pause {p['id']} ({p['scope']}) resumed by {p['resumed_by']}" for p in ended)
    _show(ctx, data, text or "no pause was active")


@click.command()
@_options
@click.pass_context
def pauses(ctx: click.Context) -> None:
    """Pauses in force, and those that ended in the last 24 hours."""
    data = _api(ctx).call("GET", "/api/v1/automation/pauses")
    from rich.table import Table  # noqa: PLC0415 - rich is for output only (cli.incidents says why)

    table = Table("id", "scope", "status", "by", "reason", "until", title=f"{data['active']} active")
    for p in data["pauses"]:
        table.add_row(p["id"], p["scope"], p["status"], p["created_by"], p["reason"], utc_time(p["until"]))
    _show(ctx, data, table)


@click.group()
def shadow() -> None:
    """Shadow rules: what they would have done."""


@shadow.command("report")
@click.option("--since", "since", default="7d", show_default=True, help="How far back: 24h, 7d, 30d.")
@_options
@click.pass_context
def shadow_report(ctx: click.Context, since: str) -> None:
    """Per shadow rule: how often it would have rolled back, what, and whether the incident resolved without it."""
    data = _api(ctx).call("GET", f"/api/v1/automation/shadow?since_s={parse_duration(since):g}")
    from rich.table import Table  # noqa: PLC0415 - rich is for output only (cli.incidents says why)

    table = Table(
        "rule", "would roll back", "resolved without", "still open", "other", "targets", "last",
        title=f"shadow decisions since {utc_time(data['since'])}",
    )  # fmt: skip
    for r in data["rules"]:
        targets = ", ".join(f"{t} x{n}" for t, n in sorted(r["targets"].items()))
        table.add_row(
            r["rule"], str(r["would_roll_back"]), str(r["resolved_without_rollback"]), str(r["still_open"]),
            str(r["other"]), targets, r["last"],
        )  # fmt: skip
    _show(ctx, data, table if data["rules"] else "no shadow decisions in that period")
