"""Prometheus and Alertmanager from Debian, run as plain processes for the tests.

Both listen on free loopback ports with their storage in a fresh temp folder
under ``workdir`` and are ready when ``/-/ready`` answers. Tests rewrite their
configuration at run time (``configure``) and the running process reloads it
through ``POST /-/reload`` (Prometheus runs with ``--web.enable-lifecycle``).

Prometheus evaluates and scrapes every second and resends firing alerts every
second (``--rules.alert.resend-delay=1s``). Its ``alerting.alertmanagers`` can
point at the Alertmanager or straight at any HTTP receiver that implements
``POST <path_prefix>/api/v2/alerts`` (rollbackd itself, or a webhook sink).

Alertmanager runs without gossip (``--cluster.listen-address=``) and routes
everything to one webhook receiver, grouped by ``alertname`` with 1 s group
wait/interval. Its notification log survives a reload, so a test that wants a
fresh notification uses an alert name of its own.

``SecuredPrometheus`` is a second Prometheus behind ``--web.config.file``:
HTTPS with a certificate from a CA made for it, and basic auth on every
endpoint, for the clients' TLS and credentials; ``requiring_client_certificates``
makes it demand a client certificate too (mutual TLS). The stack's own requests
to it (readiness, reload, queries) carry the same credentials.

Binaries: ``scripts/stack/install-debian.sh`` installs them.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from tests.fakes.tls import TestCa, TlsFiles
from tests.stack.base import Proc, StackError, free_port, http_ok, log_tail

PROMETHEUS_BIN = "/usr/bin/prometheus"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
PROMTOOL_BIN = "/usr/bin/promtool"
INSTALL_HINT = "install it with scripts/stack/install-debian.sh"
START_ATTEMPTS = 3  # a free port can be taken between free_port() and bind


def _require(binary: str) -> str:
    if not Path(binary).is_file():
        raise StackError(f"{binary} is missing: {INSTALL_HINT}")
    return binary


def promtool_check_rules(path: Path | str) -> subprocess.CompletedProcess[str]:
    """``promtool check rules PATH``; returncode 0 when the rule file is valid."""
    return subprocess.run(
        [_require(PROMTOOL_BIN), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _post(url: str, timeout: float = 30.0, access: Access | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=b"", method="POST", headers=access.headers if access else {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=access.context if access else None) as resp:  # noqa: S310
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def _get_json(url: str, timeout: float = 10.0, access: Access | None = None) -> Any:
    req = urllib.request.Request(url, headers=access.headers if access else {})  # noqa: S310 - loopback URL
    with urllib.request.urlopen(req, timeout=timeout, context=access.context if access else None) as resp:  # noqa: S310
        return json.loads(resp.read())


@dataclass(frozen=True)
class Access:
    """How the stack's own requests reach a secured service: a TLS context and an Authorization header."""

    context: ssl.SSLContext
    headers: dict[str, str]


def _ready(url: str, access: Access | None) -> bool:
    try:
        _get_json(url.replace("/-/ready", "/api/v1/status/buildinfo"), timeout=2.0, access=access)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def _dump(path: Path, content: dict[str, Any] | str) -> None:
    """Write atomically, so a reload never reads a half-written file."""
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class _Service:
    """A Debian binary run on a free loopback port, ready at ``/-/ready``."""

    name = "service"
    binary = ""
    startup_timeout = 120.0  # generous: the CPU may be shared with long builds

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fixed_port = port
        self.port = 0
        self.proc: Proc | None = None
        self.storage: Path | None = None
        self.log = self.workdir / f"{self.name}.log"
        self.config_file = self.workdir / f"{self.name}.yml"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` while running."""
        if not self.port:
            raise StackError(f"{self.name} is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    access: Access | None = None  # set by services that require TLS and credentials

    def _argv(self, port: int, storage: Path) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def _ready_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/-/ready"

    def start(self) -> dict[str, str]:
        """Start the process and wait until ``/-/ready``; raise ``StackError`` with the log tail if not."""
        if self.proc is not None and self.proc.alive():
            return {"url": self.url}
        _require(self.binary)
        self.write_config()
        last: StackError | None = None
        for _ in range(1 if self.fixed_port else START_ATTEMPTS):
            port = self.fixed_port or free_port()
            storage = Path(tempfile.mkdtemp(prefix=f"{self.name}-data-", dir=self.workdir))
            proc = Proc(self.name, self._argv(port, storage), self.log).start()
            self.proc, self.port, self.storage = proc, port, storage
            ready = (
                functools.partial(http_ok, self._ready_url(port))
                if self.access is None
                else functools.partial(_ready, self._ready_url(port), self.access)
            )
            try:
                proc.wait_until(ready, self.startup_timeout, "/-/ready")
            except StackError as exc:
                last = exc
                self.stop()
                if "address already in use" not in log_tail(self.log, 10):
                    raise
                continue
            return {"url": self.url}
        assert last is not None
        raise last

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and drop its storage; the log stays."""
        if self.proc is not None:
            self.proc.stop(timeout=20.0)
            self.proc = None
        if self.storage is not None:
            shutil.rmtree(self.storage, ignore_errors=True)
            self.storage = None
        self.port = 0

    def reload(self) -> None:
        """``POST /-/reload``; raise ``StackError`` with the server's reason if it refuses the config."""
        if self.proc is None or not self.proc.alive():
            raise StackError(f"{self.name} is not running:\n{log_tail(self.log)}")
        status, body = _post(f"{self.url}/-/reload", access=self.access)
        if status != 200:
            raise StackError(f"{self.name} refused its new config (HTTP {status}): {body.strip()}")


@dataclass(frozen=True)
class AlertmanagerTarget:
    """Where Prometheus sends alerts: ``POST http://ADDRESS<path_prefix>/api/v2/alerts``."""

    address: str  # host:port
    path_prefix: str = ""
    bearer_token: str | None = None
    scheme: str = "http"
    timeout: str = "5s"

    def render(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "scheme": self.scheme,
            "api_version": "v2",
            "timeout": self.timeout,
            "static_configs": [{"targets": [self.address]}],
        }
        if self.path_prefix:
            entry["path_prefix"] = self.path_prefix
        if self.bearer_token is not None:
            entry["authorization"] = {"type": "Bearer", "credentials": self.bearer_token}
        return entry


EMPTY_RULES = "groups: []\n"


class Prometheus(_Service):
    """Prometheus scraping ``scrape_targets`` every second and evaluating ``rules`` every second."""

    name = "prometheus"
    binary = PROMETHEUS_BIN

    def __init__(
        self,
        workdir: Path,
        *,
        scrape_targets: Sequence[str] = (),
        rules: str = EMPTY_RULES,
        alertmanagers: Sequence[AlertmanagerTarget] = (),
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        job_name: str = "stack",
        port: int | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.scrape_targets = list(scrape_targets)
        self.rules = rules
        self.alertmanagers = list(alertmanagers)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.job_name = job_name
        self.rules_file = self.workdir / "rules.yml"

    def _argv(self, port: int, storage: Path) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}/",  # generatorURL, else the host name
            "--web.enable-lifecycle",
            "--rules.alert.resend-delay=1s",
            "--storage.tsdb.retention.time=1h",
        ]

    def render_config(self) -> dict[str, Any]:
        """The ``prometheus.yml`` for the current settings."""
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                # must not exceed the interval; the default 10s would be refused
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(self.rules_file)],
            "scrape_configs": [],
        }
        if self.scrape_targets:
            config["scrape_configs"] = [
                {"job_name": self.job_name, "static_configs": [{"targets": list(self.scrape_targets)}]}
            ]
        if self.alertmanagers:
            config["alerting"] = {"alertmanagers": [t.render() for t in self.alertmanagers]}
        return config

    def write_config(self) -> None:
        """Write ``rules.yml`` and ``prometheus.yml`` into the workdir."""
        _dump(self.rules_file, self.rules if self.rules.strip() else EMPTY_RULES)
        _dump(self.config_file, self.render_config())

    def configure(
        self,
        *,
        scrape_targets: Sequence[str] | None = None,
        rules: str | None = None,
        alertmanagers: Sequence[AlertmanagerTarget] | None = None,
    ) -> None:
        """Change the given settings, rewrite the files and reload if running (``None`` keeps a setting)."""
        if scrape_targets is not None:
            self.scrape_targets = list(scrape_targets)
        if rules is not None:
            self.rules = rules
        if alertmanagers is not None:
            self.alertmanagers = list(alertmanagers)
        self.write_config()
        if self.proc is not None:
            self.reload()

    def reset(self) -> None:
        """No targets, no rules, no alertmanagers."""
        self.configure(scrape_targets=[], rules=EMPTY_RULES, alertmanagers=[])

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raise ``StackError`` unless status is success."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = _get_json(f"{self.url}/api/v1/{path}{query}", access=self.access)
        if body.get("status") != "success":
            raise StackError(f"prometheus /api/v1/{path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list of a vector result."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending and firing) alerts."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rule_names(self) -> set[str]:
        """Names of the loaded alerting and recording rules."""
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return {str(rule["name"]) for group in groups for rule in group["rules"]}


class SecuredPrometheus(Prometheus):
    """Prometheus behind its own ``--web.config.file``: HTTPS only, and basic auth on every endpoint.

    As Prometheus is run when it is exposed beyond its pod (or as Mimir's and Grafana Cloud's
    query front ends are reached): the certificate is issued by ``ca`` for 127.0.0.1, the one
    user's password is stored as the bcrypt hash the web config requires.
    """

    name = "prometheus-secured"

    def __init__(self, workdir: Path, ca: TestCa, *, username: str = "rollbackd", **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.ca = ca
        self.username = username
        self.password = "prom-" + secrets.token_hex(12)
        self.tls = ca.issue(self.workdir / "tls", "prometheus")
        self.client_cert = ca.issue(self.workdir / "tls", "rollbackd-client", sans="DNS:rollbackd-client", client=True)
        self.client_certificates_required = False
        self.web_config = self.workdir / "web.yml"
        context = ssl.create_default_context(cafile=str(ca.cert))
        context.load_cert_chain(str(self.client_cert.cert), str(self.client_cert.key))  # sent only when asked
        token = base64.b64encode(f"{username}:{self.password}".encode()).decode()
        self.access = Access(context, {"Authorization": f"Basic {token}"})

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def _ready_url(self, port: int) -> str:
        return f"https://127.0.0.1:{port}/-/ready"

    def _argv(self, port: int, storage: Path) -> list[str]:
        argv = [a for a in super()._argv(port, storage) if not a.startswith("--web.external-url")]
        return [*argv, f"--web.config.file={self.web_config}", f"--web.external-url=https://127.0.0.1:{port}/"]

    def write_config(self) -> None:
        super().write_config()
        self._write_web_config()

    def _write_web_config(self) -> None:
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=10)).decode()
        tls: dict[str, Any] = {"cert_file": str(self.tls.cert), "key_file": str(self.tls.key)}
        if self.client_certificates_required:
            tls |= {"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(self.ca.cert)}
        _dump(self.web_config, {"tls_server_config": tls, "basic_auth_users": {self.username: hashed}})

    @contextlib.contextmanager
    def requiring_client_certificates(self) -> Iterator[TlsFiles]:
        """Mutual TLS while inside: a client certificate signed by ``ca`` is required (yields one).

        Prometheus reads its web config at every TLS handshake, so this takes effect at the
        next connection, without a restart; the config is restored on the way out.
        """
        self.client_certificates_required = True
        self._write_web_config()
        try:
            yield self.client_cert
        finally:
            self.client_certificates_required = False
            self._write_web_config()


@dataclass(frozen=True)
class WebhookReceiver:
    """Alertmanager's one receiver: a webhook with an optional Bearer token."""

    url: str
    bearer_token: str | None = None
    name: str = "webhook"
    send_resolved: bool = True
    max_alerts: int = 0

    def render(self) -> dict[str, Any]:
        hook: dict[str, Any] = {
            "url": self.url,
            "send_resolved": self.send_resolved,
            "max_alerts": self.max_alerts,
        }
        if self.bearer_token is not None:
            hook["http_config"] = {"authorization": {"type": "Bearer", "credentials": self.bearer_token}}
        return {"name": self.name, "webhook_configs": [hook]}


class Alertmanager(_Service):
    """Alertmanager routing every alert to one webhook (or nowhere until one is configured)."""

    name = "alertmanager"
    binary = ALERTMANAGER_BIN

    def __init__(
        self,
        workdir: Path,
        *,
        webhook: WebhookReceiver | None = None,
        group_by: Sequence[str] = ("alertname",),
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        port: int | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.webhook = webhook
        self.group_by = list(group_by)
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.repeat_interval = repeat_interval

    def _argv(self, port: int, storage: Path) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}/",  # externalURL of the webhook payload
            "--cluster.listen-address=",  # empty: no gossip, no second port
        ]

    def render_config(self) -> dict[str, Any]:
        """The ``alertmanager.yml`` for the current settings."""
        receiver = self.webhook.render() if self.webhook else {"name": "blackhole"}
        return {
            "route": {
                "receiver": receiver["name"],
                "group_by": list(self.group_by),
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [receiver],
        }

    def write_config(self) -> None:
        _dump(self.config_file, self.render_config())

    def configure(
        self,
        *,
        webhook: WebhookReceiver | None = None,
        webhook_url: str | None = None,
        bearer_token: str | None = None,
        group_by: Sequence[str] | None = None,
        group_wait: str | None = None,
        group_interval: str | None = None,
        repeat_interval: str | None = None,
    ) -> None:
        """Change the given settings, rewrite the config and reload if running.

        ``webhook_url`` (with ``bearer_token``) is a short form of ``webhook``.
        """
        if webhook_url is not None:
            webhook = WebhookReceiver(webhook_url, bearer_token)
        if webhook is not None:
            self.webhook = webhook
        if group_by is not None:
            self.group_by = list(group_by)
        self.group_wait = group_wait or self.group_wait
        self.group_interval = group_interval or self.group_interval
        self.repeat_interval = repeat_interval or self.repeat_interval
        self.write_config()
        if self.proc is not None:
            self.reload()

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the alerts Alertmanager holds."""
        alerts: list[dict[str, Any]] = _get_json(f"{self.url}/api/v2/alerts")
        return alerts
