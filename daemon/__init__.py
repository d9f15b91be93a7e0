"""rollbackd — watches production and rolls bad deployments back.

The pipeline, one package per stage: ``sources`` (what arrives) → ``ingest``
(dedupe, durable inbox) → ``rules`` (thresholds and the rollback matrix) →
``incidents`` (state machine, approvals, acks) → ``actions`` (Kubernetes
rollbacks) → ``notify`` (PagerDuty, Slack). ``store`` persists all of it,
``api`` is the HTTP surface, ``app`` owns the lifecycle and ``cli`` the commands.
"""

__version__ = "0.1.0"
