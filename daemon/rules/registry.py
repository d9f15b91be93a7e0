"""The active rule set and its atomic hot reload (SIGHUP, file change, API).

A reload reads and validates every file completely before swapping one
reference; on any error the running set stays in force, the error is logged,
kept for the API/CLI (``last_error``) and exported as metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from daemon import metrics
from daemon.clock import Clock
from daemon.logs import get_logger
from daemon.rules.build import build
from daemon.rules.loader import RuleError, RuleLoadError, load_paths
from daemon.rules.ruleset import RuleSet

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """Outcome of one reload attempt."""

    ok: bool
    errors: tuple[str, ...]
    at: datetime
    rule_count: int


def load_ruleset(paths: Sequence[Path]) -> tuple[RuleSet | None, list[RuleError], list[RuleError]]:
    """Read, validate and compile ``paths``: (rule set or None, errors, warnings)."""
    docs, errors = load_paths(paths)
    result = build(docs)
    errors = sorted([*errors, *result.errors])
    return (None if errors else result.ruleset), errors, result.warnings


class RuleRegistry:
    """Holds the current ``RuleSet``; ``reload`` swaps it only for a completely valid one."""

    def __init__(self, paths: Sequence[Path], clock: Clock) -> None:
        self.paths = [Path(p) for p in paths]
        self._clock = clock
        self._current: RuleSet | None = None
        self.last_error: str | None = None
        self.last_reload_at: datetime | None = None
        self.last_result: ReloadResult | None = None
        self.last_errors: tuple[RuleError, ...] = ()

    @property
    def current(self) -> RuleSet:
        if self._current is None:
            raise RuntimeError("rules are not loaded yet: call load() first")
        return self._current

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def load(self) -> RuleSet:
        """First load: raise ``RuleLoadError`` listing every error (the daemon must not start)."""
        result = self.reload()
        if not result.ok:
            raise RuleLoadError(self.last_errors)
        return self.current

    def reload(self) -> ReloadResult:
        """Validate the files completely, then swap; on error keep the running set."""
        at = self._clock.now()
        ruleset, errors, warnings = load_ruleset(self.paths)
        self.last_reload_at = at
        self.last_errors = tuple(errors)
        metrics.RELOAD_TIMESTAMP.set(at.timestamp())
        if ruleset is None:
            texts = tuple(str(e) for e in errors)
            self.last_error = f"{len(texts)} error(s): " + "; ".join(texts)
            metrics.RELOAD_SUCCESS.set(0)
            kept = self._current.rule_count if self._current else 0
            log.error("rules.reload_failed", errors=list(texts[:20]), error_count=len(texts), kept_rules=kept)
            self.last_result = ReloadResult(False, texts, at, kept)
            return self.last_result
        self._current = ruleset  # one reference assignment: readers see the old set or the new one
        self.last_error = None
        metrics.RELOAD_SUCCESS.set(1)
        metrics.RULES_LOADED.labels(kind="threshold").set(len(ruleset.thresholds))
        metrics.RULES_LOADED.labels(kind="decision").set(len(ruleset.decisions))
        for w in warnings:
            log.warning("rules.warning", warning=str(w))
        log.info("rules.reloaded", **ruleset.summary())
        self.last_result = ReloadResult(True, (), at, ruleset.rule_count)
        return self.last_result

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload whenever a rule file changes, until ``stop`` is set (run as a guarded task)."""
        from watchfiles import awatch  # noqa: PLC0415 - only the daemon's watcher needs it

        watched = [str(p) for p in self.paths if p.exists()]
        if not watched:
            log.warning("rules.watch_nothing", paths=[str(p) for p in self.paths])
            return
        async for changes in awatch(*watched, stop_event=stop, debounce=500):
            if any(Path(path).suffix in (".yaml", ".yml") for _, path in changes):
                await asyncio.to_thread(self.reload)
