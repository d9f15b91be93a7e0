"""``rollbackd replay``: what would these rules have done with last week's alerts and deploys?

Reads a recorded JSONL file or a Kafka topic range (``sources.replay_reader``),
runs it through the daemon's own pipeline in recorded time and dry run
(``daemon.replay``: the live inbox, dispatcher, rules, incident service, timers
and executor over a throwaway store), and prints every input, incident
transition and notification, then each incident's decision record — the same
record the API serves. Nothing is sent or changed. Exit codes: 0 done, 2 bad
input or rule files, 3 Kafka unreachable.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import click

from daemon.cli.common import EXIT_UNREACHABLE, EXIT_USAGE, config_option, echo_error
from daemon.clock import SystemClock
from daemon.config import KafkaSettings, load_settings
from daemon.errors import ConfigError, InputError, TemporaryError
from daemon.logs import logging_for_command
from daemon.replay import ReplayReport, Step
from daemon.replay import replay as run_replay
from daemon.rules import RuleRegistry
from daemon.rules.durations import parse_duration
from daemon.rules.loader import RuleLoadError
from daemon.sources.replay_reader import ReplayRecord, read_file, read_kafka

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
    # The report goes to stdout; the daemon's own log lines (it runs its real code) only when they matter.
    with logging_for_command("error"):
        report = _replay(file, rule_paths, config, bootstrap, topic, (from_offset, to_offset, partitions), horizon)
    if output == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_text(report)


def _replay(  # noqa: PLR0917 - the command's options, passed on
    file: Path | None,
    rule_paths: tuple[Path, ...],
    config: Path | None,
    bootstrap: str | None,
    topic: str | None,
    offsets: tuple[int, int | None, tuple[int, ...]],
    horizon: str,
) -> ReplayReport:
    from_offset, to_offset, partitions = offsets
    try:
        settings = load_settings(config) if config else load_settings(None)
        paths = list(rule_paths) or (list(settings.rules.paths) if config else [Path("rules")])
        registry = _load_rules(paths)
        horizon_s = parse_duration(horizon)
        if file is not None:
            records = read_file(file)
        else:
            kafka_topic = topic or (settings.kafka.deploy_topic if config else None)
            if not kafka_topic:
                raise click.UsageError("--kafka needs --topic (or a --config naming kafka.deploy_topic)")
            # --kafka names the brokers; TLS and SASL come from --config's kafka group, as the daemon's.
            kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap or ""})
            records = _read_kafka(kafka, kafka_topic, from_offset, to_offset, partitions)
    except (ConfigError, InputError, ValueError) as exc:
        echo_error(str(exc))
        sys.exit(EXIT_USAGE)
    except TemporaryError as exc:
        echo_error(str(exc))
        sys.exit(EXIT_UNREACHABLE)
    return asyncio.run(run_replay(settings, registry, records, timedelta(seconds=horizon_s)))


def _load_rules(paths: list[Path]) -> RuleRegistry:
    registry = RuleRegistry(paths, SystemClock())
    try:
        registry.load()
    except RuleLoadError as exc:
        raise ConfigError("rule files are invalid:\n" + "\n".join(f"  {e}" for e in exc.errors)) from None
    return registry


def _read_kafka(
    kafka: KafkaSettings, topic: str, from_offset: int, to_offset: int | None, partitions: tuple[int, ...]
) -> list[ReplayRecord]:
    if to_offset is not None and to_offset < from_offset:
        raise InputError(f"--to-offset {to_offset} is before --from-offset {from_offset}")
    return asyncio.run(
        read_kafka(kafka, topic, from_offset=from_offset, to_offset=to_offset, partitions=partitions or None)
    )


def _line(step: Step) -> str:
    who = step.incident or ""
    text = f"{step.at:%Y-%m-%d %H:%M:%S}  {who:<12} {step.text}"
    colour = _COLOURS.get(step.kind)
    rollback = "rollback" in step.text
    return click.style(text, fg="red" if rollback else colour, bold=rollback) if colour else text


def _print_text(report: ReplayReport) -> None:
    for step in report.steps:
        click.echo(_line(step))
    click.echo("")
    decisions = Counter((d["rule"], d["action"]) for d in report.decisions())
    click.secho(f"{report.records} record(s), {sum(decisions.values())} decision(s):", bold=True)
    for (rule, action), n in sorted(decisions.items()):
        click.echo(f"  {n:>4}  {rule}  {action}")
    click.secho(f"{len(report.incidents)} incident(s):", bold=True)
    for inc in report.incidents:
        targets = ", ".join(inc["decision"]["targets"]) or "-"
        click.echo(f"  {inc['id']:<12} {inc['state']:<18} {inc['decision']['rule']}  {targets}")
    rollbacks = report.rollbacks()
    click.secho(f"{len(rollbacks)} rollback(s) would have run (dry run):", bold=True)
    for r in rollbacks:
        to = f" to revision {r['to_revision']}" if r["to_revision"] is not None else ""
        click.echo(f"  {r['at']}  {r['incident']:<12} {', '.join(r['targets']) or '-'}{to}  ({r['rule']})")
    for t in report.pending_timers():
        click.echo(f"  pending after the horizon: {t['incident']} {t['timer']} at {t['due']}")
