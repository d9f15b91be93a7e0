"""A whole rollbackd in the test process with its incident pages configured, for the web and browser tests.

Responders sign in with personal tokens of scope ``responder``; ``alice``
(Engineering Lead), ``carol`` (CTO) and ``dave`` (Data Lead) are approvers
with argon2 personal codes, ``bob`` is a responder who approves nothing.
Alerts go in through the real webhook (``alert_webhook``), signed with the
harness' ingest token, and are decided by the shipped rules.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from daemon.config import Settings
from tests.harness import TOKENS, daemon_settings

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RULES = [REPO / "rules" / "rollback-matrix.yaml", REPO / "rules" / "routing.yaml"]

ROLES = {"alice": ["Engineering Lead"], "carol": ["CTO"], "dave": ["Data Lead"]}
RESPONDERS = ("alice", "bob", "carol", "dave")
WEB_TOKENS = {name: f"web-{name}-{uuid.uuid4().hex}" for name in RESPONDERS}
CODES = {name: f"{name}-code-{uuid.uuid4().hex[:8]}" for name in ROLES}


def _token(name: str, token: str, scopes: list[str]) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(token.encode()).hexdigest(), "scopes": scopes}


@functools.cache
def _code_hash(name: str) -> str:
    return PasswordHasher().hash(CODES[name])  # argon2 is slow on purpose: once per test process


def web_settings(tmp_path: Path, rules: list[Path] | None = None, **groups: Any) -> Settings:
    """Settings with the harness' tokens plus one ``responder`` token per person, and the approvers.

    ``rules``: the rule files (default: the shipped ones, where they are)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    approvers = []
    for name, roles in ROLES.items():
        hash_file = tmp_path / f"{name}.code-hash"
        hash_file.write_text(_code_hash(name))
        approvers.append({"name": name, "roles": roles, "code_hash": {"file": str(hash_file)}})
    tokens = [_token(f"{scope}-caller", token, [scope]) for scope, token in TOKENS.items()]
    tokens += [_token(name, token, ["responder"]) for name, token in WEB_TOKENS.items()]
    http = {"tokens": tokens, **groups.pop("http", {})}
    return daemon_settings(tmp_path, rules or SHIPPED_RULES, http=http, approvers=approvers, **groups)


def alert_webhook(
    alertname: str,
    *,
    deployment: str = "checkout",
    namespace: str = "prod",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    generator_url: str = "http://prometheus.local/graph?g0.expr=up",
) -> dict[str, Any]:
    """An Alertmanager (version 4) webhook with one firing alert; a new fingerprint each call."""
    all_labels = {"alertname": alertname, "namespace": namespace, "deployment": deployment, "severity": "page"}
    all_labels |= labels or {}
    return {
        "version": "4", "groupKey": f"{{}}:{{alertname=\"{alertname}\"}}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "rollbackd", "groupLabels": {"alertname": alertname}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.local",
        "alerts": [{
            "status": "firing", "labels": all_labels, "annotations": {"summary": "it broke", **(annotations or {})},
            "startsAt": datetime.now(UTC).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": generator_url, "fingerprint": uuid.uuid4().hex[:16],
        }],
    }  # fmt: skip
