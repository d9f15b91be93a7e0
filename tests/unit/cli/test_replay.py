"""``rollbackd replay`` on the recorded sample prints the decisions the shipped rules make.

The sample (docs/examples/replay.jsonl) is a morning of deploys and alerts:
checkout's 2.5.0 raises the error rate to 12% (a P1 rollback after the
Engineering Lead's deadline passes), search's 2% error rate only notifies and
clears, ledger goes down right after a deploy that ran a migration (P0, but the
irreversibility guard holds it for the CTO and the Data Lead).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.cli.replay import replay

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "docs" / "examples" / "replay.jsonl"
RULES = REPO / "rules"


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(replay, [*args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _texts(out: str) -> list[str]:
    """Each story line without its time and incident id columns."""
    return [line[21:].split(" ", 1)[-1].strip() for line in out.splitlines() if line[:4].isdigit()]


def test_sample_prints_the_decisions_of_the_shipped_rules() -> None:
    code, out, _ = _run(str(SAMPLE), "--rules", str(RULES))
    assert code == 0
    texts = _texts(out)
    assert [t for t in texts if t.startswith("decision ") and ":" in t.split()[1]] == [
        "decision error-rate-above-5-percent: P1 rollback_within shop/checkout to revision 7",
        "decision ApplicationErrorRate: P1 notify shop/search",
        "decision service-completely-down: P0 rollback_now IRREVERSIBLE payments/ledger to revision 4",
    ]
    # What would have happened, with nobody answering the pages:
    approved = "awaiting_approval -> approved: approval deadline passed; the rule proceeds without quorum"
    escalated = "awaiting_approval -> escalated: approval deadline passed without quorum; escalating"
    assert f"deadline_passed {approved}" in texts
    assert "alert_resolved open -> resolved: every alert resolved before any action ran" in texts
    assert f"deadline_passed {escalated}" in texts
    assert "duplicate ignored: ApplicationErrorRate firing" in texts
    would = out.split("1 rollback(s) would have run (dry run):")[1]
    assert "shop/checkout to revision 7  (error-rate-above-5-percent)" in would
    assert "payments/ledger" not in would


def test_json_output_for_scripts() -> None:
    code, out, _ = _run(str(SAMPLE), "--rules", str(RULES), "--output", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["records"] == 10
    assert [(d["rule"], d["action"], d["targets"]) for d in doc["decisions"]] == [
        ("error-rate-above-5-percent", "rollback_within", ["shop/checkout"]),
        ("ApplicationErrorRate", "notify", ["shop/search"]),
        ("service-completely-down", "rollback_now", ["payments/ledger"]),
    ]
    ledger = doc["decisions"][2]
    assert ledger["irreversible"] is True
    assert ledger["deploy"]["event_id"] == "d-201"
    assert set(ledger["approval"]["roles"]) == {"CTO", "Data Lead", "Engineering Lead"}
    by_rule = {i["rule"]: i for i in doc["incidents"]}
    assert {rule: i["state"] for rule, i in by_rule.items()} == {
        "error-rate-above-5-percent": "resolved", "ApplicationErrorRate": "resolved",
        "service-completely-down": "escalated",
    }  # fmt: skip
    assert doc["rollbacks"] == [
        {
            "at": "2025-06-02T10:30:00+00:00",
            "incident": by_rule["error-rate-above-5-percent"]["id"],
            "rule": "error-rate-above-5-percent",
            "targets": ["shop/checkout"],
            "to_revision": 7,
        }
    ]


def test_short_horizon_leaves_the_deadline_pending() -> None:
    code, out, _ = _run(str(SAMPLE), "--rules", str(RULES), "--horizon", "1m", "--output", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["rollbacks"] == []
    checkout = next(i["id"] for i in doc["incidents"] if i["rule"] == "error-rate-above-5-percent")
    expected = {"incident": checkout, "timer": "approval_deadline", "due": "2025-06-02T10:30:00+00:00"}
    assert expected in doc["pending_timers"]


def test_records_are_replayed_in_time_order(tmp_path: Path) -> None:
    """A deploy recorded after the alert but dated before it still correlates."""
    lines = SAMPLE.read_text().splitlines()
    alert = next(line for line in lines if '"ServiceDown"' in line)
    deploys = [line for line in lines if '"payments"' in line and "schema_version" in line]
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join([alert, *reversed(deploys)]) + "\n")
    code, out, _ = _run(str(shuffled), "--rules", str(RULES), "--output", "json")
    assert code == 0
    (decision,) = json.loads(out)["decisions"]
    assert decision["to_revision"] == 4


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", "bad.jsonl:2: not JSON"),
        ('{"hello": 1}', "bad.jsonl:2: neither an Alertmanager webhook body"),
        ('{"version": "3", "status": "firing", "alerts": []}', "bad.jsonl:2: alertmanager webhook: version"),
        ('{"schema_version": 1, "event_id": "x"}', "bad.jsonl:2: deploy event"),
    ],
)
def test_a_bad_record_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("# comment\n" + line + "\n")
    code, _, err = _run(str(bad), "--rules", str(RULES))
    assert code == 2
    assert expected in err


def test_invalid_rules_exit_2(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("apiVersion: rollbackd/v1\ndecisions: [{name: x}]\n")
    code, _, err = _run(str(SAMPLE), "--rules", str(tmp_path))
    assert code == 2
    assert "rule files are invalid" in err
    assert "broken.yaml" in err


def test_file_and_kafka_are_exclusive() -> None:
    code, _, err = _run(str(SAMPLE), "--kafka", "127.0.0.1:9092", "--topic", "t")
    assert code == 2
    assert "either FILE or --kafka" in err
