"""The daemon's configuration: one YAML file plus ``ROLLBACKD_*`` environment overrides.

Read once at start-up (``load_settings``) and passed down; nothing reads the
environment at import time. Secrets are never literal values in the YAML: a
``SecretRef`` points at a file (a mounted Kubernetes Secret) or an environment
variable, and is read only when a client is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daemon.errors import ConfigError
from daemon.redact import register_secret


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Group):
    """Where a secret lives: a file (preferred, e.g. a mounted Secret) or an environment variable."""

    file: Path | None = Field(None, description="Path of a file whose content (stripped) is the secret.")
    env: str | None = Field(None, description="Name of an environment variable holding the secret.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of 'file' or 'env'")
        return self

    def read(self) -> str:
        """The secret's value; raises ConfigError naming the source (never the value)."""
        if self.file is not None:
            try:
                value = self.file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"secret file {self.file} cannot be read: {exc.strerror}") from None
            if not value:
                raise ConfigError(f"secret file {self.file} is empty")
            return register_secret(value)
        value = os.environ.get(self.env or "", "").strip()
        if not value:
            raise ConfigError(f"secret environment variable {self.env} is not set or empty")
        return register_secret(value)


# ``responder``: sign in to the incident pages (``daemon.web``), which may read, acknowledge and,
# with an approver's code, approve or reject.
TokenScope = Literal["read", "ack", "approve", "admin", "ingest", "responder", "control"]


class RateLimit(_Group):
    """A token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    per_second: float = Field(gt=0, description="Sustained requests per second.")
    burst: int = Field(ge=1, description="Requests allowed at once before the rate applies.")


class ApiToken(_Group):
    """A bearer token for the HTTP API, stored as the SHA-256 hex of the token."""

    name: str = Field(description="Who holds the token; appears in the audit log.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex digest of the token.")
    scopes: list[TokenScope] = Field(description="What the token may do.")
    rate_limit: RateLimit | None = Field(
        None,
        description="Over this rate the token gets 429 with Retry-After. Default: http.rate_limit for tokens "
        "without the ingest scope; ingest tokens are unlimited unless given one here (an alert storm is "
        "never refused by default).",
    )


class AlertLimits(_Group):
    """Bounds on one alert, in the spirit of Prometheus' label_limit and label_*_length_limit.

    An alert over a bound is refused with 400 naming the bound; the valid alerts of the
    same request are still accepted, as Alertmanager's API does.
    """

    max_labels: int = Field(64, ge=1, description="Labels per alert.")
    max_annotations: int = Field(64, ge=1, description="Annotations per alert.")
    max_name_length: int = Field(256, ge=1, description="Characters in a label or annotation name.")
    max_label_value_length: int = Field(2048, ge=1, description="Characters in a label value.")
    max_annotation_value_length: int = Field(16384, ge=1, description="Characters in an annotation value.")


class HttpSettings(_Group):
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(9797, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted (413 above).")
    public_url: str | None = Field(
        None, description="Externally reachable base URL of this API; PagerDuty and Slack link incidents to it."
    )
    tokens: list[ApiToken] = Field(default_factory=list, description="Bearer tokens with scopes.")
    webhook_hmac_secret: SecretRef | None = Field(
        None, description="Optional HMAC-SHA256 key; when set, webhooks must carry X-Rollbackd-Signature."
    )
    auth_required: bool = Field(
        True,
        description="Require bearer tokens. false is refused at start-up unless host is a loopback address, "
        "where every start logs a warning.",
    )
    alert_limits: AlertLimits = AlertLimits()
    rate_limit: RateLimit | None = Field(
        None, description="Default per-token rate for tokens without the ingest scope (none: unlimited)."
    )


class StoreSettings(_Group):
    url: str = Field(
        "sqlite+aiosqlite:///var/rollbackd.sqlite",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    password: SecretRef | None = Field(None, description="Database password, if not in the URL.")
    auto_upgrade: bool = Field(True, description="Run alembic migrations at start-up.")


class RulesSettings(_Group):
    paths: list[Path] = Field(default_factory=lambda: [Path("rules")], description="Rule files or folders.")
    watch: bool = Field(True, description="Reload when a rule file changes.")


class LeaderElectionSettings(_Group):
    enabled: bool = Field(False, description="Elect one leader on a coordination.k8s.io Lease.")
    lease_name: str = "rollbackd-leader"
    namespace: str = "rollbackd"
    lease_duration_s: float = Field(15.0, gt=0)
    renew_deadline_s: float = Field(10.0, gt=0)
    retry_period_s: float = Field(2.0, gt=0)


class KubernetesSettings(_Group):
    kubeconfig: Path | None = Field(None, description="kubeconfig file; default: in-cluster, then ~/.kube/config.")
    context: str | None = Field(None, description="kubeconfig context to use.")
    dry_run: bool | None = Field(
        None, description="Server-side dry run for every action. Default: off when a cluster is reachable."
    )
    rollout_timeout_s: float = Field(300.0, gt=0, description="Wait for a rollout this long (seed: 300 s).")
    request_timeout_s: float = Field(10.0, gt=0, description="Timeout of one API request.")
    budget_max_rollbacks: int = Field(2, ge=1, description="Automatic rollbacks per Deployment per window.")
    budget_window_s: float = Field(3600.0, gt=0, description="The rollback budget's window.")
    bad_revision_window_s: float = Field(
        86400.0, gt=0,
        description="One automated rollback per (target, revision rolled back from) within this window; a second "
        "trigger for the same bad revision (its pod template, whatever its revision number now) escalates instead.",
    )  # fmt: skip
    leader_election: LeaderElectionSettings = LeaderElectionSettings()


class TlsSettings(_Group):
    """TLS to a server (Kafka brokers, Prometheus): which CA to trust, and an optional client certificate."""

    ca_file: Path | None = Field(None, description="PEM CA bundle to verify the server (default: the system's).")
    cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS), with key_file.")
    key_file: Path | None = Field(None, description="PEM private key of cert_file.")
    key_password: SecretRef | None = Field(None, description="Password of an encrypted key_file.")
    check_hostname: bool = Field(True, description="Verify that the server's certificate names the host dialled.")

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file for a client certificate, or neither")
        return self


SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class KafkaSaslSettings(_Group):
    """SASL authentication to the brokers: PLAIN and SCRAM with a user and password, OAUTHBEARER with a token."""

    mechanism: SaslMechanism = Field(description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.")
    username: str | None = Field(None, description="User name (PLAIN, SCRAM).")
    password: SecretRef | None = Field(None, description="The user's password (PLAIN, SCRAM).")
    token: SecretRef | None = Field(
        None, description="OAUTHBEARER: the bearer token, re-read at every login so a refreshed token file is used."
    )

    @model_validator(mode="after")
    def _credentials_for_mechanism(self) -> KafkaSaslSettings:
        if self.mechanism == "OAUTHBEARER":
            if self.token is None or self.username is not None or self.password is not None:
                raise ValueError("OAUTHBEARER takes a token (file or env) and no username or password")
        elif self.username is None or self.password is None or self.token is not None:
            raise ValueError(f"{self.mechanism} takes a username and a password (file or env) and no token")
        return self


class KafkaSettings(_Group):
    enabled: bool = Field(False, description="Consume deployment events from Kafka.")
    bootstrap_servers: str = "127.0.0.1:9092"
    deploy_topic: str = "deployments"
    group_id: str = "rollbackd"
    dead_letter_topic: str | None = Field(
        "deployments.dlq", description="Where undecodable or invalid deploy events go; none: skipped and counted."
    )
    decisions_topic: str | None = Field("rollbackd.decisions", description="Where decisions are published.")
    tls: TlsSettings | None = Field(None, description="Connect over TLS (SSL or SASL_SSL); none: plaintext.")
    sasl: KafkaSaslSettings | None = Field(None, description="Authenticate with SASL; none: no SASL.")


class BasicAuth(_Group):
    username: str
    password: SecretRef


class PrometheusSettings(_Group):
    url: str | None = Field(None, description="Prometheus base URL for polling and verification queries.")
    poll_interval_s: float = Field(15.0, gt=0)
    query_timeout_s: float = Field(10.0, gt=0)
    no_data_notify_after_s: float = Field(300.0, gt=0, description="Notify when a query has had no data this long.")
    bearer_token: SecretRef | None = Field(None, description="Sent as Authorization: Bearer (Grafana Cloud, Thanos).")
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic auth (Prometheus' --web.config.file).")
    tls: TlsSettings | None = Field(None, description="CA and client certificate for an https:// url.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers, e.g. X-Scope-OrgID for Mimir, Cortex or Loki."
    )

    @model_validator(mode="after")
    def _one_authorization(self) -> PrometheusSettings:
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("give bearer_token or basic_auth, not both")
        if any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("headers: set Authorization through bearer_token or basic_auth (secret references)")
        return self


class SlackSettings(_Group):
    enabled: bool = False
    token: SecretRef | None = Field(None, description="Bot token (xoxb-...).")
    signing_secret: SecretRef | None = Field(None, description="Verifies interactivity callbacks.")
    base_url: str = Field("https://slack.com/api/", description="Web API base URL.")
    default_channel: str = "#incidents"
    timeout_s: float = Field(10.0, gt=0)


class PagerDutySettings(_Group):
    enabled: bool = False
    routing_keys: dict[str, SecretRef] = Field(
        default_factory=dict, description="PagerDuty service name -> Events API v2 integration key."
    )
    base_url: str = Field("https://events.pagerduty.com", description="Events API base URL (https only).")
    ca_file: Path | None = Field(None, description="CA bundle to verify the Events API's certificate.")
    webhook_secrets: list[SecretRef] = Field(default_factory=list, description="Webhook v3 signing secrets.")
    timeout_s: float = Field(10.0, gt=0)


class ApproverSettings(_Group):
    name: str
    roles: list[str]
    deploy_authors: list[str] = Field(
        default_factory=list,
        description="Who this person is in deploy events' author field (Git e-mail, CI user); their name "
        "always counts. Used by rules with forbid_author_approval.",
    )
    slack_user_id: str | None = None
    pagerduty_user_id: str | None = None
    totp_secret: SecretRef | None = Field(None, description="Base32 TOTP seed.")
    code_hash: SecretRef | None = Field(None, description="argon2 hash of a personal approval code.")


class WebSettings(_Group):
    """The incident pages for responders (``daemon.web``): sessions and the authenticating proxy."""

    enabled: bool = Field(True, description="Serve the incident pages under /incidents.")
    session_idle_s: float = Field(1800.0, gt=0, description="A session unused this long ends (seconds).")
    session_max_s: float = Field(43200.0, gt=0, description="A session ends this long after sign-in, used or not.")
    proxy_user_header: str | None = Field(
        None, description="Header an authenticating proxy (oauth2-proxy, Pomerium) sets to the user's name."
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Addresses or CIDR networks the proxy connects from; the header from any other peer is ignored.",
    )
    users: dict[str, str] = Field(
        default_factory=dict,
        description="Signed-in user (token name or proxy user) to approver name; default: the same name.",
    )
    kubernetes_url: str | None = Field(
        None,
        description="Link to a workload in a console, with {namespace}, {kind} and {name}; none: the kubectl command.",
    )


class LoggingSettings(_Group):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ControlSettings(_Group):
    """Automation control: which namespaces run in shadow mode."""

    shadow_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose decisions run in shadow mode whatever the rule says: decided, notified "
        "(labelled SHADOW) and dry-run on the API server, never written.",
    )


class Settings(BaseSettings):
    """Everything the daemon can be told. See ``config/rollbackd.yaml`` for a documented example."""

    model_config = SettingsConfigDict(env_prefix="ROLLBACKD_", env_nested_delimiter="__", extra="forbid", frozen=True)

    http: HttpSettings = HttpSettings()
    store: StoreSettings = StoreSettings()
    rules: RulesSettings = RulesSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    kafka: KafkaSettings = KafkaSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    slack: SlackSettings = SlackSettings()
    pagerduty: PagerDutySettings = PagerDutySettings()
    approvers: list[ApproverSettings] = Field(default_factory=list)
    web: WebSettings = WebSettings()
    control: ControlSettings = ControlSettings()
    logging: LoggingSettings = LoggingSettings()
    instance: str = Field(default_factory=lambda: os.environ.get("HOSTNAME", "rollbackd"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return env_settings, init_settings


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (YAML) and the environment; raise ConfigError naming every bad field."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, found {type(loaded).__name__}")
        data = loaded or {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        where = str(path) if path else "configuration"
        lines = [f"{where}: {exc.error_count()} error(s)"]
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {field}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None
