"""``rollbackd incidents | ack | approve | reject | rollback``: responders' commands over the daemon's HTTP API.

Approval codes are prompted for with hidden input, never taken from argv (so
they stay out of shell history and ``ps``), sent once in the request body and
forgotten. The bearer token comes from ``--token-file`` or ``ROLLBACKD_TOKEN``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from daemon.cli import http
from daemon.cli.common import DEFAULT_URL, EXIT_FAILED, EXIT_UNREACHABLE, daemon_url, echo_error, read_token

# The records (daemon.incidents.record, dozens of dataclasses), rich and the table drawing
# (daemon.cli.pages) are imported by the code that prints text: with ``--output json`` a responder's
# script should not pay for them at start-up (issue 19).



class Api:
    """The incidents endpoints over ``cli.http``; exits with a clear message on errors."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            answer = http.call(self._url, method, path, token=self._token, body=body, timeout=self._timeout)
        except http.Unreachable as exc:
            echo_error(f"cannot reach the daemon at {self._url}: {exc}")
            sys.exit(EXIT_UNREACHABLE)
        if not answer.ok:
            echo_error(_describe(answer))
            sys.exit(EXIT_FAILED)
        return answer.body


def _describe(answer: http.Answer) -> str:
    data = answer.body
    if not isinstance(data, dict):
        return f"HTTP {answer.status}"
    detail = str(data.get("detail", data))
    if "remaining_tries" in data:
        detail += f" (tries left before lockout: {data['remaining_tries']})"
    return f"HTTP {answer.status}: {detail}"


def _api(ctx: click.Context) -> Api:
    obj = ctx.find_object(dict) or {}
    return Api(obj.get("url") or daemon_url(), read_token(obj.get("token_file")))


def _options(func: Any) -> Any:
    """--url, --token-file and --output, accepted by every command here."""

    def store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        obj = ctx.ensure_object(dict)
        if value is not None or param.name not in obj:
            obj[str(param.name)] = (
                value if value is not None else {"url": daemon_url(), "output": "text"}.get(str(param.name))
            )
        return value

    func = click.option(
        "--url", default=None, expose_value=False, callback=store,
        help=f"Daemon URL (env ROLLBACKD_URL, else {DEFAULT_URL}).",
    )(func)  # fmt: skip
    func = click.option(
        "--token-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        callback=store,
        help="File holding the bearer token (default: env ROLLBACKD_TOKEN).",
    )(func)
    return click.option(
        "--output", type=click.Choice(["text", "json"]), default=None, expose_value=False, callback=store
    )(func)


def _show(ctx: click.Context, data: Any, text: Any) -> None:
    """``data`` with ``--output json``, else ``text``: a renderable, or a function making one.

    A function is called for text output only: parsing a page of 1,000 records back into
    ``IncidentRecord`` values to draw the table took longer than the request (issue 19).
    """
    if ctx.find_object(dict).get("output") == "json":  # type: ignore[union-attr]
        # orjson: the standard library's indented dump of a 1,000-incident page took longer than its request.
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    else:
        from rich.console import Console  # noqa: PLC0415 - text output only (see the imports)

        Console().print(text() if callable(text) else text)


def _prompt_code(approver: str) -> str:
    # hide_input: the code never echoes on screen and never passes through argv.
    return str(click.prompt(f"approval code for {approver}", hide_input=True)).strip()


@click.group()
@_options
def incidents() -> None:
    """List incidents and show their decision records."""


@incidents.command("list")
@click.option("--state", default=None, help="Only incidents in this state.")
@click.option("--open", "open_only", is_flag=True, help="Only open incidents.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@_options
@click.pass_context
def list_cmd(ctx: click.Context, state: str | None, open_only: bool, limit: int) -> None:
    """List incidents, newest first."""
    params = [f"limit={limit}"] + ([f"state={state}"] if state else []) + (["open=true"] if open_only else [])
    data = _api(ctx).call("GET", "/api/v1/incidents?" + "&".join(params))

    def text() -> Any:
        from daemon.cli.pages import render_list  # noqa: PLC0415 - text output only (see the imports)
        from daemon.incidents.record import IncidentRecord  # noqa: PLC0415

        return render_list([IncidentRecord.from_json(d) for d in data["incidents"]])

    _show(ctx, data, text)


@incidents.command("show")
@click.argument("incident_id")
@_options
@click.pass_context
def show_cmd(ctx: click.Context, incident_id: str) -> None:
    """Show one incident's decision record as a timeline."""
    data = _api(ctx).call("GET", f"/api/v1/incidents/{incident_id}")

    def text() -> Any:
        from daemon.cli.pages import render_timeline  # noqa: PLC0415 - text output only (see the imports)
        from daemon.incidents.record import IncidentRecord  # noqa: PLC0415

        return render_timeline(IncidentRecord.from_json(data))

    _show(ctx, data, text)


@click.command()
@click.argument("incident_id")
@_options
@click.pass_context
def ack(ctx: click.Context, incident_id: str) -> None:
    """Acknowledge an incident: stops escalation; PagerDuty and Slack follow."""
    data = _api(ctx).call("POST", f"/api/v1/incidents/{incident_id}/ack")
    _show(ctx, data, f"incident {incident_id} acknowledged by {data.get('acknowledged_by')}")


def _verdict_command(verb: str, summary: str, role_help: str) -> click.Command:
    """``approve`` or ``reject``: the same options, the code prompted for, the incident's new state shown."""

    @click.command(verb, help=summary)
    @click.argument("incident_id")
    @click.option("--approver", required=True, help="Your approver name, as configured.")
    @click.option("--role", default=None, help=role_help)
    @click.option("--comment", default="", help="Why (recorded in the decision record).")
    @_options
    @click.pass_context
    def command(ctx: click.Context, incident_id: str, approver: str, role: str | None, comment: str) -> None:
        body = {"approver": approver, "code": _prompt_code(approver), "role": role, "comment": comment}
        data = _api(ctx).call("POST", f"/api/v1/incidents/{incident_id}/{verb}", body)
        from daemon.cli.pages import waiting_for  # noqa: PLC0415 - see the imports
        from daemon.incidents.record import IncidentRecord  # noqa: PLC0415

        record = IncidentRecord.from_json(data)
        waiting = waiting_for(record)
        _show(ctx, data, f"incident {incident_id}: {record.state}" + (f" (waiting for {waiting})" if waiting else ""))

    return command


approve = _verdict_command(
    "approve", "Approve a pending rollback; prompts for your approval code.", "The role this approval counts for."
)
reject = _verdict_command(
    "reject", "Reject a pending rollback: it will not run. Prompts for your approval code.", "The role you reject as."
)


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why (recorded and notified).")
@click.option("--approver", "approvers", multiple=True, required=True, help="Approver name; repeat for a quorum.")
@click.option(
    "--to-revision",
    type=click.IntRange(min=1),
    default=None,
    help="Undo to this revision (one target); default: previous.",
)
@_options
@click.pass_context
def rollback(
    ctx: click.Context, targets: tuple[str, ...], reason: str, approvers: tuple[str, ...], to_revision: int | None
) -> None:
    """Break-glass rollback of NAMESPACE/NAME (a Deployment) or KIND/NAMESPACE/NAME [...].

    KIND is deployment, statefulset or daemonset (statefulset/prod/ledger). Prompts for each approver's code.
    """
    from daemon.target import Target  # noqa: PLC0415 - see the imports

    for t in targets:
        try:
            Target.parse_strict(t)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGETS") from None
    if to_revision is not None and len(targets) != 1:
        raise click.BadParameter("names a revision of one target only", param_hint="--to-revision")
    approvals = [{"approver": a, "code": _prompt_code(a)} for a in approvers]
    body: dict[str, Any] = {"targets": list(targets), "reason": reason, "approvals": approvals}
    if to_revision is not None:
        body["to_revision"] = to_revision
    data = _api(ctx).call("POST", "/api/v1/rollbacks", body)
    _show(ctx, data, f"rollback incident {data['id']}: {data['state']}")
