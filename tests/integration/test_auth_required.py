"""``http.auth_required: false`` cannot open the API beyond loopback: ``rollbackd run`` refuses to start.

The daemon runs as ``rollbackd run`` builds it (``tests.daemon_process``), with
API tokens configured, so the only thing that would switch authentication off
is the setting itself, from the YAML file or from the environment. On a
non-loopback address (0.0.0.0, every interface) start-up must fail with a
message naming the setting; on loopback it starts, says so in a warning, and
serves unauthenticated calls as documented.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.daemon_process import DaemonProcess
from tests.webhooks import probe_webhook

pytestmark = pytest.mark.integration


def _refused(proc: DaemonProcess) -> str:
    with pytest.raises(RuntimeError, match="exited") as info:
        proc.start(timeout=60)
    proc.stop()
    return str(info.value)


def test_auth_off_on_every_interface_is_refused_at_start(tmp_path: Path) -> None:
    proc = DaemonProcess(tmp_path, extra={"http": {"host": "0.0.0.0", "auth_required": False}})  # noqa: S104
    message = _refused(proc)
    assert "http.auth_required is false" in message
    assert "'0.0.0.0' is not a loopback address" in message
    assert proc.popen is not None
    assert proc.popen.returncode == 2  # a usage error, not a crash


def test_auth_off_from_the_environment_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLBACKD_HTTP__AUTH_REQUIRED", "false")
    proc = DaemonProcess(tmp_path, extra={"http": {"host": "0.0.0.0"}})  # noqa: S104
    assert "http.auth_required is false" in _refused(proc)


def test_auth_off_on_loopback_starts_with_a_warning_every_time(tmp_path: Path) -> None:
    proc = DaemonProcess(tmp_path, log_level="warning", extra={"http": {"auth_required": False}})
    for _ in range(2):  # every start says it, not only the first
        proc.start()
        try:
            resp = httpx.post(
                f"{proc.url}/webhooks/alertmanager", content=probe_webhook("shop", "web"),
                headers={"Content-Type": "application/json"}, timeout=10,
            )  # fmt: skip
            assert resp.status_code == 200, resp.text
        finally:
            proc.stop()
    log = (tmp_path / "rollbackd.log").read_text()
    warnings = [json.loads(line) for line in log.splitlines() if "auth_required is false" in line]
    assert len(warnings) == 2, log[-2000:]
    assert all(w["level"] == "warning" for w in warnings)
