"""``rollbackd replay``: what would these rules have done with last week's alerts and deploys?

Reads a recorded JSONL file or a Kafka topic range (``sources.replay_reader``),
runs it through the rules and the incident state machine in dry run
(``cli.replay_sim``) and prints, in recorded time, every decision, incident
transition, notification and the rollbacks that would have run. Nothing is
stored, sent or changed. Exit codes: 0 done, 2 bad input or rule files,
3 Kafka unreachable.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import click

from daemon.cli.common import config_option, echo_error
from daemon.cli.replay_sim import Replay, ReplayResult, Step
from daemon.config import load_settings
from daemon.errors import ConfigError, InputError, TemporaryError
from daemon.rules import RuleSet, load_ruleset
from daemon.rules.durations import parse_duration
from daemon.sources.replay_reader import ReplayRecord, read_file, read_kafka

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

_COLOURS = {"decision": "cyan", "rollback": "red", "transition": "yellow", "no_match": "bright_black"}


@click.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rules",
    "rule_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Rule files or folders (repeatable). Default: rules.paths of --config, else ./rules.",
)
@config_option
@click.option("--kafka", "bootstrap", default=None, help="Read a topic range from these Kafka bootstrap servers.")
@click.option("--topic", default=None, help="Kafka topic (default: kafka.deploy_topic of --config).")
@click.option("--from-offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--to-offset", type=click.IntRange(min=0), default=None, help="Last offset, inclusive (default: end).")
@click.option("--partition", "partitions", type=click.IntRange(min=0), multiple=True, help="Default: all.")
@click.option(
    "--horizon",
    default="2h",
    show_default=True,
    help="After the last record, let timers run this long (nobody acknowledges or approves).",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def replay(  # noqa: PLR0917 - click passes each option as a parameter
    file: Path | None,
    rule_paths: tuple[Path, ...],
    config: Path | None,
    bootstrap: str | None,
    topic: str | None,
    from_offset: int,
    to_offset: int | None,
    partitions: tuple[int, ...],
    horizon: str,
    output: str,
) -> None:
    """Replay recorded alerts and deploy events through the rules and the incident state machine (dry run).

    FILE is JSONL: Alertmanager webhook bodies, normalized alerts or deployment
    events, one per line (see docs/replay.md). Or use --kafka to read
    a topic range. Nothing is stored, notified or rolled back.
    """
    if (file is None) == (bootstrap is None):
        raise click.UsageError("give either FILE or --kafka BOOTSTRAP (with --topic), not both")
    try:
        settings = load_settings(config) if config else None
        paths = list(rule_paths) or (list(settings.rules.paths) if settings else [Path("rules")])
        ruleset = _load_rules(paths)
        horizon_s = parse_duration(horizon)
        if file is not None:
            records = read_file(file)
        else:
            kafka_topic = topic or (settings.kafka.deploy_topic if settings else None)
            if not kafka_topic:
                raise click.UsageError("--kafka needs --topic (or a --config naming kafka.deploy_topic)")
            records = _read_kafka(bootstrap or "", kafka_topic, from_offset, to_offset, partitions)
    except (ConfigError, InputError, ValueError) as exc:
        echo_error(str(exc))
        sys.exit(EXIT_USAGE)
    except TemporaryError as exc:
        echo_error(str(exc))
        sys.exit(EXIT_UNREACHABLE)
    result = Replay(ruleset).run(records, timedelta(seconds=horizon_s))
    if output == "json":
        click.echo(json.dumps(_as_json(result, len(records)), indent=2))
    else:
        _print_text(result, len(records))


def _load_rules(paths: list[Path]) -> RuleSet:
    ruleset, errors, _warnings = load_ruleset(paths)
    if ruleset is None:
        raise ConfigError("rule files are invalid:\n" + "\n".join(f"  {e}" for e in errors))
    return ruleset


def _read_kafka(
    bootstrap: str, topic: str, from_offset: int, to_offset: int | None, partitions: tuple[int, ...]
) -> list[ReplayRecord]:
    if to_offset is not None and to_offset < from_offset:
        raise InputError(f"--to-offset {to_offset} is before --from-offset {from_offset}")
    return asyncio.run(
        read_kafka(bootstrap, topic, from_offset=from_offset, to_offset=to_offset, partitions=partitions or None)
    )


def _line(step: Step) -> str:
    who = step.incident or ""
    text = f"{step.at:%Y-%m-%d %H:%M:%S}  {who:<4} {step.text}"
    colour = _COLOURS.get(step.kind)
    return click.style(text, fg=colour, bold=step.kind == "rollback") if colour else text


def _print_text(result: ReplayResult, record_count: int) -> None:
    for step in result.steps:
        click.echo(_line(step))
    click.echo("")
    by_rule = Counter((d.rule, d.action.value) for _, _, d in result.decisions)
    click.secho(f"{record_count} record(s), {len(result.decisions)} decision(s):", bold=True)
    for (rule, action), n in sorted(by_rule.items()):
        click.echo(f"  {n:>4}  {rule}  {action}")
    click.secho(f"{len(result.incidents)} incident(s):", bold=True)
    for inc in result.incidents.values():
        targets = ", ".join(str(t) for t in inc.decision.targets) or "-"
        click.echo(f"  {inc.id:<4} {inc.state.value:<18} {inc.decision.rule}  {targets}")
    click.secho(f"{len(result.rollbacks)} rollback(s) would have run (dry run):", bold=True)
    for at, incident_id, decision in result.rollbacks:
        targets = ", ".join(str(t) for t in decision.targets) or "-"
        click.echo(f"  {at:%Y-%m-%d %H:%M:%S}  {incident_id:<4} {targets}  ({decision.rule})")
    for incident_id, kind, due in result.pending_timers:
        click.echo(f"  pending after the horizon: {incident_id} {kind.value} at {due:%Y-%m-%d %H:%M:%S}")


def _as_json(result: ReplayResult, record_count: int) -> dict[str, object]:
    return {
        "records": record_count,
        "steps": [s.to_json() for s in result.steps],
        "decisions": [{"at": at.isoformat(), "alert": alert, **d.to_json()} for at, alert, d in result.decisions],
        "incidents": [inc.to_json() for inc in result.incidents.values()],
        "rollbacks": [
            {
                "at": at.isoformat(),
                "incident": iid,
                "rule": d.rule,
                "targets": [str(t) for t in d.targets],
                "to_revision": d.to_revision,
            }
            for at, iid, d in result.rollbacks
        ],
        "pending_timers": [
            {"incident": iid, "timer": kind.value, "due": due.isoformat()} for iid, kind, due in result.pending_timers
        ],
    }
