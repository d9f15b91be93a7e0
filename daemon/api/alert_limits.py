"""Bounds on what one alert may carry, checked at the ingest edge after parsing.

Part of the api stage, between ``daemon.sources`` (which parses a webhook into
``Alert`` values) and the inbox. Prometheus bounds a scrape with
``label_limit``, ``label_name_length_limit`` and ``label_value_length_limit``;
``http.alert_limits`` bounds an alert the same way, plus its annotations.
Like Alertmanager's ``POST /api/v2/alerts``, the check is per alert: the
alerts within bounds go on to the inbox and the answer is a 400 naming each
refused alert and the bound it broke, so one oversized alert never costs its
valid neighbours (neither Alertmanager nor Prometheus resends after a 4xx).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from daemon.config import AlertLimits
from daemon.model import Alert

SETTING = "http.alert_limits"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One alert over a bound: its position in the request, and what was wrong in words."""

    index: int
    limit: str  # the setting's field name, e.g. ``max_labels``
    problem: str

    @property
    def reason(self) -> str:
        """The short reason the refusal is counted under."""
        return _REASONS[self.limit]

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "limit": f"{SETTING}.{self.limit}", "problem": self.problem}


_REASONS = {
    "max_labels": "too_many_labels",
    "max_annotations": "too_many_annotations",
    "max_name_length": "name_too_long",
    "max_label_value_length": "label_value_too_long",
    "max_annotation_value_length": "annotation_value_too_long",
}


def _check_map(what: str, items: Mapping[str, str], limits: AlertLimits) -> tuple[str, str] | None:
    """(the bound's field, the problem) for the first bound ``items`` breaks; ``what`` is label or annotation."""
    count_field, value_field = f"max_{what}s", f"max_{what}_value_length"
    max_items, max_value = getattr(limits, count_field), getattr(limits, value_field)
    if len(items) > max_items:
        return count_field, f"{len(items)} {what}s, at most {max_items} allowed ({SETTING}.{count_field})"
    for name, value in items.items():
        if len(name) > limits.max_name_length:
            return "max_name_length", (
                f"{what} name of {len(name)} characters ({name[:40]!r}…), "
                f"at most {limits.max_name_length} allowed ({SETTING}.max_name_length)"
            )
        if len(value) > max_value:
            return value_field, (
                f"{what} {name[:60]!r} has a value of {len(value)} characters, "
                f"at most {max_value} allowed ({SETTING}.{value_field})"
            )
    return None


def refusal(alert: Alert, index: int, limits: AlertLimits) -> Refusal | None:
    """Why ``alert`` is over a bound, or None when it is within all of them."""
    for found in (_check_map("label", alert.labels, limits), _check_map("annotation", alert.annotations, limits)):
        if found is not None:
            return Refusal(index, *found)
    return None


def split(alerts: Sequence[Alert], limits: AlertLimits) -> tuple[list[Alert], list[Refusal]]:
    """(alerts within bounds, refusals of the others), in request order."""
    kept: list[Alert] = []
    refused: list[Refusal] = []
    for i, alert in enumerate(alerts):
        found = refusal(alert, i, limits)
        if found is None:
            kept.append(alert)
        else:
            refused.append(found)
    return kept, refused
