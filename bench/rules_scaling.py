"""Per-alert evaluation time of the rule engine at 10, 100, 1,000 and 10,000 decision rules.

Each set mixes rules keyed by alertname, by another label, and with CEL; the
probe alert matches a handful of rules whatever the set size, so with the
index the cost should stay flat. Prints one JSON document; target:
ratio_10k_to_10 <= 2.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import yaml

from daemon.deploys import DeployEvent, DeployHistory, DeployKind
from daemon.model import Alert, AlertStatus, Target
from daemon.rules import load_ruleset

SIZES = (10, 100, 1_000, 10_000)
ROUNDS = 7
ALERTS_PER_ROUND = 2_000


def rule_file(n: int) -> dict:
    decisions = []
    for i in range(n):
        rule = {"name": f"rule-{i}", "severity": "P1", "action": "notify", "channels": ["slack"]}
        if i % 3 == 0:
            rule["match"] = [f'alertname="Alert{i}"', 'env="prod"']
        elif i % 3 == 1:
            rule["match"] = [f'service="svc-{i}"', 'alertname!="Heartbeat"']
        else:
            rule["match"] = [f'alertname="Alert{i}"']
            rule["when"] = "value > 0.5"
        decisions.append(rule)
    # The probe's rules: present in every set, so every set does the same matching work.
    decisions.append(
        {
            "name": "probe-a",
            "match": ['alertname="Probe"', 'env="prod"'],
            "when": "value > 0.5",
            "severity": "P1",
            "action": "notify",
            "channels": ["slack"],
            "continue": True,
        }
    )
    decisions.append(
        {"name": "probe-b", "match": ['alertname="Probe"'], "severity": "P2", "action": "notify", "channels": ["slack"]}
    )
    return {"apiVersion": "rollbackd/v1", "channels": {"slack": {"slack": "#x"}}, "decisions": decisions}


def measure(n: int, tmp: Path) -> dict:
    path = tmp / f"rules-{n}.yaml"
    path.write_text(yaml.safe_dump(rule_file(n)))
    t0 = time.perf_counter()
    ruleset, errors, _ = load_ruleset([path])
    load_s = time.perf_counter() - t0
    if ruleset is None:
        raise SystemExit(f"bench rules invalid: {errors[:3]}")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    alert = Alert(
        "Probe",
        AlertStatus.FIRING,
        MappingProxyType({"env": "prod", "service": "checkout", "namespace": "prod", "deployment": "web"}),
        MappingProxyType({}),
        now,
        "fp",
        "bench",
        Target("prod", "web"),
        value=0.9,
    )
    history = DeployHistory((DeployEvent("d1", DeployKind.SUCCEEDED, "checkout", "prod", "web", now, revision=3),))
    decisions = ruleset.evaluate(alert, history)
    assert [d.rule for d in decisions] == ["probe-a", "probe-b"], decisions
    per_round = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(ALERTS_PER_ROUND):
            ruleset.evaluate(alert, history)
        per_round.append((time.perf_counter() - t) / ALERTS_PER_ROUND)
    return {
        "rules": ruleset.rule_count,
        "median_us": statistics.median(per_round) * 1e6,
        "min_us": min(per_round) * 1e6,
        "load_s": round(load_s, 3),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(n, Path(tmp)) for n in SIZES]
    ratio = results[-1]["median_us"] / results[0]["median_us"]
    out = {
        "unit": "microseconds per alert evaluation (median of rounds)",
        "rounds": ROUNDS,
        "alerts_per_round": ALERTS_PER_ROUND,
        "results": [{**r, "median_us": round(r["median_us"], 2), "min_us": round(r["min_us"], 2)} for r in results],
        "ratio_10k_to_10": round(ratio, 3),
        "target_ratio": 2.0,
        "ok": ratio <= 2.0,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
