"""Every metric the daemon exports, declared in one place so names stay consistent.

Stages import the family they update; ``/metrics`` renders this registry.
Label values are short reasons (``RollbackdError.reason``), never free text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)

# ingestion
ALERTS_RECEIVED = Counter(
    "rollbackd_alerts_received", "Alerts received, by source and outcome.", ["source", "outcome"], registry=REGISTRY
)
DEPLOY_EVENTS = Counter(
    "rollbackd_deploy_events", "Deployment events consumed, by outcome.", ["outcome"], registry=REGISTRY
)
KAFKA_CONSUMER_RESTARTS = Counter(
    "rollbackd_kafka_consumer_restarts",
    "Times a Kafka consumer task stopped for any reason and was restarted, by consumer.",
    ["consumer"],
    registry=REGISTRY,
)
KAFKA_CONSUMER_UP = Gauge(
    "rollbackd_kafka_consumer_up",
    "1 while a Kafka consumer is joined and fetching, by consumer.",
    ["consumer"],
    registry=REGISTRY,
)
KAFKA_CONSUMER_LAG = Gauge(
    "rollbackd_kafka_consumer_lag",
    "Records behind the end of the assigned partitions at the last fetch, by consumer.",
    ["consumer"],
    registry=REGISTRY,
)
INPUT_REJECTED = Counter(
    "rollbackd_input_rejected",
    "Inputs rejected at the edge, by source and reason.",
    ["source", "reason"],
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "rollbackd_store_errors",
    "Database failures at the store's boundary, by reason (store: unreachable, constraint, store_bug).",
    ["reason"],
    registry=REGISTRY,
)
INBOX_PENDING = Gauge("rollbackd_inbox_pending", "Inbox entries not yet processed.", registry=REGISTRY)
QUEUE_DEPTH = Gauge("rollbackd_queue_depth", "Items waiting in per-key work queues.", registry=REGISTRY)
INBOX_ERRORS = Counter(
    "rollbackd_inbox_errors",
    "Inbox items whose handler failed, by kind, reason and outcome (retried, failed).",
    ["kind", "reason", "outcome"],
    registry=REGISTRY,
)
TRUNCATED_ALERTS = Counter(
    "rollbackd_alertmanager_truncated_alerts",
    "Alerts Alertmanager dropped from webhooks (truncatedAlerts).",
    registry=REGISTRY,
)
NO_DATA = Gauge(
    "rollbackd_query_no_data", "1 while a threshold rule's query returns no data.", ["rule"], registry=REGISTRY
)

# rules
DECISIONS = Counter("rollbackd_decisions", "Decisions made, by rule and action.", ["rule", "action"], registry=REGISTRY)
RULE_EVAL_SECONDS = Histogram(
    "rollbackd_rule_evaluation_seconds",
    "Time to evaluate one event against the rules.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RULES_LOADED = Gauge("rollbackd_rules_loaded", "Rules in the active rule set, by kind.", ["kind"], registry=REGISTRY)
RELOAD_SUCCESS = Gauge("rollbackd_rules_last_reload_success", "1 if the last rule reload succeeded.", registry=REGISTRY)
RELOAD_TIMESTAMP = Gauge(
    "rollbackd_rules_last_reload_timestamp_seconds",
    "When the rules were last reloaded (success or not).",
    registry=REGISTRY,
)

# incidents and approvals
INCIDENTS_OPEN = Gauge("rollbackd_incidents_open", "Open incidents, by state.", ["state"], registry=REGISTRY)
TRANSITIONS = Counter(
    "rollbackd_incident_transitions", "Incident state transitions.", ["from_state", "to_state"], registry=REGISTRY
)
APPROVAL_WAIT = Histogram(
    "rollbackd_approval_wait_seconds", "From incident open to quorum met.", buckets=_WAIT_BUCKETS, registry=REGISTRY
)
APPROVAL_ATTEMPTS = Counter(
    "rollbackd_approval_attempts", "Approval attempts, by outcome.", ["outcome"], registry=REGISTRY
)
ACKS = Counter("rollbackd_acknowledgements", "Acknowledgements, by channel.", ["via"], registry=REGISTRY)

# actions
ROLLBACKS = Counter(
    "rollbackd_rollbacks",
    "Rollbacks, by outcome (succeeded, failed, dry_run, refused, ...).",
    ["outcome"],
    registry=REGISTRY,
)
FORCED_POD_DELETIONS = Counter(
    "rollbackd_forced_pod_deletions",
    "Pods of a stuck StatefulSet deleted by a forced rollback, by outcome (deleted, gone, failed).",
    ["outcome"],
    registry=REGISTRY,
)
ROLLBACK_SECONDS = Histogram(
    "rollbackd_rollback_duration_seconds",
    "From undo to the Deployment being Ready.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DECISION_LATENCY = Histogram(
    "rollbackd_decision_to_patch_seconds",
    "From an alert's arrival to the rollback patch.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
IS_LEADER = Gauge("rollbackd_leader", "1 while this replica holds the leader lease.", registry=REGISTRY)
AUTOMATION_PAUSES = Gauge(
    "rollbackd_automation_pauses", "Pauses of automated rollback in force, by scope kind.", ["scope"], registry=REGISTRY
)
AUTOMATION_HELD = Counter(
    "rollbackd_automation_held",
    "Automated rollbacks a guard held (pause, freeze, shadow, one attempt per bad revision), by guard.",
    ["guard"],
    registry=REGISTRY,
)

# notifications
NOTIFICATIONS = Counter(
    "rollbackd_notifications",
    "Notification deliveries, by channel and outcome.",
    ["channel", "outcome"],
    registry=REGISTRY,
)
NOTIFICATION_RETRIES = Counter(
    "rollbackd_notification_retries",
    "Notification retries, by channel and reason.",
    ["channel", "reason"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge("rollbackd_outbox_pending", "Notifications waiting for delivery.", registry=REGISTRY)

# HTTP
HTTP_REQUESTS = Counter(
    "rollbackd_http_requests", "HTTP requests, by route and status.", ["route", "status"], registry=REGISTRY
)
HTTP_REJECTED = Counter(
    "rollbackd_http_rejected",
    "HTTP requests refused (4xx, 503), by route template and reason (body_too_large, "
    "unsupported_media_type, label_limit, rate_limited, unauthenticated, ...).",
    ["route", "reason"],
    registry=REGISTRY,
)
