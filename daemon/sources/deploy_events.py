"""Deployment events (``daemon/schemas/deploy-event.v1.json``) parsed into ``daemon.model.DeployEvent``.

The pure half of the Kafka source: ``sources.kafka`` hands each message value
here. The format is ours, so it is strict (JSON Schema, no unknown fields); a
message that fails gets an ``InputError`` whose message names the field and
whose ``reason`` ends up in the dead-letter topic's headers.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from importlib import resources
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from daemon.deploys import DeployEvent, DeployKind
from daemon.errors import InputError
from daemon.sources.common import utc
from daemon.target import WorkloadKind

MAX_MESSAGE_BYTES = 1 << 20


@functools.cache
def schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in ``daemon/schemas``."""
    text = resources.files("daemon").joinpath("schemas", name).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name))


def _timestamp(raw: str, field: str) -> datetime:
    # jsonschema checks "date-time" only with an optional package; check it here, always.
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(
            f"deploy event: {field}: not an RFC 3339 time: {raw[:64]!r}", reason="schema_invalid"
        ) from None
    if when.tzinfo is None:
        raise InputError(f"deploy event: {field}: time has no UTC offset", reason="schema_invalid")
    return utc(when)


def validate(name: str, document: Any, what: str) -> None:
    """Raise ``InputError`` (reason ``schema_invalid``) naming the first failing field of ``document``."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        field = ".".join(str(p) for p in first.absolute_path) or "(document)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{what}: {field}: {first.message[:300]}{more}", reason="schema_invalid")


_KINDS = frozenset(k.value for k in DeployKind)
_REQUIRED = ("schema_version", "event_id", "type", "service", "namespace", "deployment", "timestamps")
_ALLOWED = frozenset(schema("deploy-event.v1.json")["properties"])
_STAMPS = frozenset(schema("deploy-event.v1.json")["properties"]["timestamps"]["properties"])
_PROPS = schema("deploy-event.v1.json")["properties"]
# The schema's own patterns, searched the way jsonschema does (re.search), so both agree exactly.
_NAMESPACE = re.compile(_PROPS["namespace"]["pattern"])
_DEPLOYMENT = re.compile(_PROPS["deployment"]["pattern"])
_MAX_LENGTH = {k: v["maxLength"] for k, v in _PROPS.items() if "maxLength" in v}
# The manifest's ``kind`` spelling the schema takes, and the workload kind each one names.
_WORKLOAD_KINDS = {k.api_kind: k for k in WorkloadKind if k.api_kind in _PROPS["kind"]["enum"]}


def _text(document: dict[str, Any], key: str, *, required: bool) -> bool:
    value = document.get(key)
    if value is None:
        return not required and key not in document
    return type(value) is str and len(value) <= _MAX_LENGTH.get(key, len(value))


def _plainly_valid(document: Any) -> bool:
    """True only for documents the v1 schema accepts; False means "ask jsonschema" (maybe still valid).

    jsonschema costs ~200 µs per event here and capped the Kafka consumer near 5k events/s; this
    check of the common shape costs a few µs. It errs only towards False (e.g. 1.0 as an integer),
    and ``tests/unit/sources/test_deploy_events.py`` checks it against jsonschema with hypothesis.
    """
    if type(document) is not dict or not _ALLOWED.issuperset(document):
        return False
    if any(key not in document for key in _REQUIRED):
        return False
    version, kind, revision = document["schema_version"], document["type"], document.get("revision")
    stamps = document["timestamps"]
    return (
        type(version) is int
        and version == 1
        and type(kind) is str
        and kind in _KINDS
        and _text(document, "event_id", required=True)
        and document["event_id"] != ""
        and _text(document, "service", required=True)
        and document["service"] != ""
        and type(document["namespace"]) is str
        and _NAMESPACE.search(document["namespace"]) is not None
        and type(document["deployment"]) is str
        and _DEPLOYMENT.search(document["deployment"]) is not None
        and (revision is None or (type(revision) is int and revision >= 1))
        and all(_text(document, key, required=False) for key in ("image", "version", "commit", "author"))
        and type(document.get("migration", False)) is bool
        and type(document.get("kind", "Deployment")) is str
        and document.get("kind", "Deployment") in _WORKLOAD_KINDS
        and type(stamps) is dict
        and "occurred_at" in stamps
        and _STAMPS.issuperset(stamps)
        and all(type(v) is str for v in stamps.values())
    )


def parse_deploy_event(value: bytes | None) -> DeployEvent:
    """Decode and validate one message value; ``InputError`` for anything malformed."""
    if not value:
        raise InputError("deploy event: (message): empty value", reason="malformed_json")
    if len(value) > MAX_MESSAGE_BYTES:
        raise InputError(
            f"deploy event: (message): {len(value)} bytes, at most {MAX_MESSAGE_BYTES}", reason="too_large"
        )
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"deploy event: (message): not JSON: {exc}", reason="malformed_json") from None
    if not _plainly_valid(document):
        validate("deploy-event.v1.json", document, "deploy event")
    stamps = document["timestamps"]
    for optional in ("started_at", "finished_at"):
        if optional in stamps:
            _timestamp(stamps[optional], f"timestamps.{optional}")
    return DeployEvent(
        event_id=document["event_id"],
        kind=DeployKind(document["type"]),
        service=document["service"],
        namespace=document["namespace"],
        deployment=document["deployment"],
        at=_timestamp(stamps["occurred_at"], "timestamps.occurred_at"),
        revision=document.get("revision"),
        image=document.get("image", ""),
        version=document.get("version", ""),
        commit=document.get("commit", ""),
        author=document.get("author", ""),
        migration=bool(document.get("migration", False)),
        workload_kind=_WORKLOAD_KINDS[document.get("kind", "Deployment")],
    )
