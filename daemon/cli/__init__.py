"""The ``rollbackd`` command: run the daemon, check configuration, manage the store.

Each area contributes its own commands (``rules``, ``incidents``, ``ack``,
``approve``, ``reject``, ``rollback``, ``replay``, ``pause``, ``resume``,
``pauses``, ``shadow``); this module names them, and each is imported only when used.
Exit codes: 0 success, 1 a check or command failed, 2 usage or configuration
error, 3 the daemon or a service could not be reached.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from daemon import __version__
from daemon.cli.common import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, config_option, echo_error
from daemon.errors import ConfigError, RollbackdError

if TYPE_CHECKING:
    # The configuration (pydantic-settings) is imported by the commands that read it: it was a third
    # of every responder command's start-up, and those commands never read it (issue 19).
    from daemon.config import SecretRef, Settings



# The commands each area contributes, as (module, attribute): imported only when named, so that
# ``rollbackd ack`` at 3 a.m. does not first load the daemon's wiring (Kubernetes, SQLAlchemy, CEL),
# which ``replay`` needs and which took most of a responder command's two seconds.
_LAZY = {
    "rules": ("daemon.cli.rules", "group"),
    "status": ("daemon.cli.status", "status"),
    "replay": ("daemon.cli.replay", "replay"),
    **{name: ("daemon.cli.incidents", name) for name in ("incidents", "ack", "approve", "reject", "rollback")},
    **{name: ("daemon.cli.automation", name) for name in ("pause", "resume", "pauses", "shadow")},
}


class _LazyGroup(click.Group):
    """A group whose ``_LAZY`` commands are imported when they are run or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY and cmd_name not in self.commands:
            module, attribute = _LAZY[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):  # pragma: no cover - a wrong entry in _LAZY
                raise TypeError(f"{module}.{attribute} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rollbackd")
def main() -> None:
    """rollbackd — rolls bad deployments back before people wake up."""


@main.command()
@config_option
def run(config: Path | None) -> None:
    """Run the daemon (embedded defaults when no --config is given)."""
    import asyncio  # noqa: PLC0415 - keep CLI start-up light for other commands

    from daemon.app import run_daemon  # noqa: PLC0415

    settings = _settings_or_exit(config)
    try:
        asyncio.run(run_daemon(settings))
    except ConfigError as exc:
        echo_error(str(exc))
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        pass


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@config_option
def config_check(config: Path | None) -> None:
    """Validate the configuration file and environment; errors name the field."""
    settings = _settings_or_exit(config)
    problems: list[str] = []
    for ref_name, ref in _secret_refs(settings):
        try:
            ref.read()
        except ConfigError as exc:
            problems.append(f"{ref_name}: {exc}")
    problems.extend(_client_problems(settings))
    if problems:
        for p in dict.fromkeys(problems):  # a secret the Kafka client reads too is said once
            echo_error(p)
        sys.exit(EXIT_FAILED)
    click.echo(f"{config or 'embedded defaults'}: configuration is valid")


@main.group()
def db() -> None:
    """Manage the store's schema."""


@db.command("upgrade")
@config_option
def db_upgrade(config: Path | None) -> None:
    """Apply the database migrations (SQLite upgrades automatically at start)."""
    import asyncio  # noqa: PLC0415

    from daemon.store.db import Store  # noqa: PLC0415

    settings = _settings_or_exit(config)

    async def go() -> str | None:
        password = settings.store.password.read() if settings.store.password else None
        store = Store(settings.store.url, password=password)
        try:
            await store.upgrade()
            return await store.current_revision()
        finally:
            await store.close()

    try:
        rev = asyncio.run(go())
    except RollbackdError as exc:
        echo_error(str(exc))
        sys.exit(EXIT_UNREACHABLE)
    click.echo(f"store is at revision {rev}")


def _settings_or_exit(path: Path | None) -> Settings:
    from daemon.config import load_settings  # noqa: PLC0415 - see the imports

    try:
        return load_settings(path)
    except ConfigError as exc:
        echo_error(str(exc))
        sys.exit(EXIT_USAGE)


def _client_problems(settings: Settings) -> list[str]:
    """Build the Kafka and Prometheus credentials as the daemon will: TLS files readable, key matching."""
    from daemon.sources.kafka_client import connection  # noqa: PLC0415 - keep CLI start-up light
    from daemon.sources.prometheus_query import PrometheusQuery  # noqa: PLC0415

    problems: list[str] = []
    try:
        if settings.kafka.enabled:
            connection(settings.kafka)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        if settings.prometheus.url is not None:
            PrometheusQuery.from_settings(settings.prometheus)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


def _secret_refs(settings: Settings) -> list[tuple[str, SecretRef]]:
    from pydantic import BaseModel  # noqa: PLC0415 - see the imports

    from daemon.config import SecretRef  # noqa: PLC0415

    found: list[tuple[str, SecretRef]] = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, SecretRef):
            found.append((prefix, value))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(f"{prefix}.{name}" if prefix else name, getattr(value, name))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)

    walk("", settings)
    return found
