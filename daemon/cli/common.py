"""Options and output helpers shared by every ``rollbackd`` command."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:9797"
# Every command's exit codes (the ``rollbackd`` help says what each means).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def daemon_url() -> str:
    """The daemon's URL when ``--url`` is not given: env ``ROLLBACKD_URL``, else the local default."""
    return os.environ.get("ROLLBACKD_URL") or DEFAULT_URL


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "-c",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=lambda: os.environ.get("ROLLBACKD_CONFIG"),
        help="YAML configuration file (env ROLLBACKD_CONFIG). Default: embedded defaults.",
    )(func)


def echo_error(message: str) -> None:
    click.secho(f"error: {message}", err=True, fg="red")


def read_token(token_file: Path | None) -> str | None:
    """The bearer token: ``--token-file``'s content when given, else env ``ROLLBACKD_TOKEN``; exits 2 if unreadable."""
    if token_file is None:
        return os.environ.get("ROLLBACKD_TOKEN") or None
    try:
        return token_file.read_text().strip() or None
    except OSError as exc:
        echo_error(f"cannot read token file {token_file}: {exc.strerror}")
        raise SystemExit(EXIT_USAGE) from None


def utc_time(iso: str | None) -> str:
    """An ISO time from the API as every command prints it: ``2026-12-02 14:55:18 UTC`` ("-" for none)."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if iso else "-"
