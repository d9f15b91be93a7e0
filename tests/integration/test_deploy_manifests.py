"""deploy/ is installable: the kustomize base passes a server-side dry run on a real apiserver.

The test cluster has no Prometheus Operator, so minimal CRDs for ServiceMonitor and
PrometheusRule (tests/integration/crds/) are installed first; everything else is the
real API server's validation and admission. The generated parts of deploy/base (the
rule-file copies and the exported PrometheusRule) must match what
``deploy/render-rules.sh`` renders now. There is no Docker engine on the test machine,
so the Dockerfile gets static checks only (no image is built or run by the tests).
"""

from __future__ import annotations

import filecmp
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import load_settings
from tests.stack.kube import KubeCluster

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "base"
CRDS = Path(__file__).parent / "crds"

EXPECTED_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceMonitor",
    "PrometheusRule",
}


def _install_crds(kube: KubeCluster) -> None:
    kube.kubectl("apply", "-f", str(CRDS))
    for crd in ("servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    # Discovery can lag behind Established by a moment; a dry run before it would not find the kind.
    deadline = time.monotonic() + 30
    while "prometheusrules" not in kube.kubectl("api-resources", "--api-group=monitoring.coreos.com").stdout:
        if time.monotonic() > deadline:
            pytest.fail("monitoring.coreos.com kinds never appeared in discovery")
        time.sleep(0.5)


def _render(
    kube: KubeCluster, tmp_path: Path, namespace: str, components: tuple[Path, ...] = ()
) -> tuple[str, list[dict[str, Any]]]:
    """The base, through an overlay that moves it to ``namespace`` (as an operator's overlay would)."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    kustomization: dict[str, Any] = {"resources": [os.path.relpath(BASE, overlay)], "namespace": namespace}
    if components:
        kustomization["components"] = [os.path.relpath(c, overlay) for c in components]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    text = kube.kubectl("kustomize", str(overlay)).stdout
    return text, [d for d in yaml.safe_load_all(text) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture
def rendered(kube: KubeCluster, namespace: str, tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    assert (BASE / "rbac.yaml").is_file(), "deploy/base/rbac.yaml (RBAC of the actions stage) is missing"
    return _render(kube, tmp_path, namespace)


def test_base_passes_server_side_dry_run(kube: KubeCluster, namespace: str, rendered: Any) -> None:
    text, docs = rendered
    _install_crds(kube)
    proc = kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=text, check=False)
    assert proc.returncode == 0, f"server-side dry run refused the manifests:\n{proc.stderr}"
    assert {d["kind"] for d in docs} == EXPECTED_KINDS
    # Every namespaced object moved with the overlay, and the RBAC subjects followed it.
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == namespace, d["metadata"]["name"]
    binding = _one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rollbackd", "namespace": namespace}]
    # The dry run answered for each object, not just for the first one.
    assert proc.stdout.count("(server dry run)") == len(docs)


def test_forced_rollback_component_adds_pod_list_and_delete_only(
    kube: KubeCluster, namespace: str, tmp_path: Path, rendered: Any
) -> None:
    """Only with the forced-rollback component may rollbackd delete pods; the base grants nothing on pods."""
    _, base_docs = rendered
    assert not [r for d in base_docs if d["kind"] == "ClusterRole" for r in d["rules"] if "pods" in r["resources"]]
    (tmp_path / "forced").mkdir()
    text, docs = _render(kube, tmp_path / "forced", namespace, (DEPLOY / "components" / "forced-rollback",))
    _install_crds(kube)
    proc = kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=text, check=False)
    assert proc.returncode == 0, f"server-side dry run refused the manifests:\n{proc.stderr}"
    added = [d for d in docs if d["metadata"]["name"] == "rollbackd-forced-rollback"]
    assert len(docs) == len(base_docs) + 2
    assert sorted(d["kind"] for d in added) == ["ClusterRole", "ClusterRoleBinding"]
    role = _one(added, "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]}]
    binding = _one(added, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rollbackd", "namespace": namespace}]


def test_deployment_is_locked_down_and_probed(rendered: Any) -> None:
    _, docs = rendered
    dep = _one(docs, "Deployment", "rollbackd")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "rollbackd"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert {"memory"} <= set(c["resources"]["limits"])
    assert c["ports"] == [{"name": "http", "containerPort": 9797, "protocol": "TCP"}]

    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/run/secrets/rollbackd"]]["secret"]["secretName"] == "rollbackd"
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the mount path under test
    config_cm = volumes[mounts["/etc/rollbackd/config"]]["configMap"]["name"]
    rules_cm = volumes[mounts["/etc/rollbackd/rules"]]["configMap"]["name"]
    # The volumes name the generated ConfigMaps (kustomize rewrote the hashed config name).
    _one(docs, "ConfigMap", config_cm)
    _one(docs, "ConfigMap", rules_cm)
    env = {e["name"]: e for e in c["env"]}
    assert env["ROLLBACKD_CONFIG"]["value"] == "/etc/rollbackd/config/rollbackd.yaml"
    assert env["ROLLBACKD_KUBERNETES__LEADER_ELECTION__NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )


def test_configmaps_carry_a_valid_config_and_the_shipped_rules(rendered: Any, tmp_path: Path) -> None:
    _, docs = rendered
    config_cm = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("rollbackd-config")
    )
    path = tmp_path / "rollbackd.yaml"
    path.write_text(config_cm["data"]["rollbackd.yaml"])
    settings = load_settings(path)
    assert settings.kubernetes.leader_election.enabled is True
    assert settings.store.url.startswith("postgresql+asyncpg://")
    assert settings.store.password is not None
    assert settings.store.password.file is not None
    assert [str(p) for p in settings.rules.paths] == ["/etc/rollbackd/rules"]

    rules_cm = _one(docs, "ConfigMap", "rollbackd-rules")
    shipped = {p.name: p.read_text() for p in sorted((REPO / "rules").glob("*.yaml"))}
    assert rules_cm["data"] == shipped


def test_other_objects(rendered: Any) -> None:
    _, docs = rendered
    assert _one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    svc = _one(docs, "Service")
    assert [p["port"] for p in svc["spec"]["ports"]] == [9797]
    netpol = _one(docs, "NetworkPolicy")["spec"]
    assert set(netpol["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for r in netpol["ingress"] for p in r["ports"]] == [9797]
    egress_ports = {p["port"] for r in netpol["egress"] for p in r["ports"]}
    assert {53, 443, 9092, 5432, 9090} <= egress_ports
    mon = _one(docs, "ServiceMonitor")
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    assert mon["spec"]["endpoints"][0]["path"] == "/metrics"
    rules = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PrometheusRule"}
    assert set(rules) == {"rollbackd-thresholds", "rollbackd-self"}
    alerts = {r["alert"] for g in rules["rollbackd-thresholds"]["spec"]["groups"] for r in g["rules"]}
    assert {"ApplicationErrorRate", "ServiceDown"} <= alerts


def test_generated_files_are_up_to_date(tmp_path: Path) -> None:
    """deploy/base/rules/ and prometheusrule.yaml equal what render-rules.sh produces from rules/ now."""
    rollbackd = Path(sys.executable).parent / "rollbackd"
    proc = subprocess.run(
        ["bash", str(DEPLOY / "render-rules.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "ROLLBACKD": str(rollbackd)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stale = [name for name in ("prometheusrule.yaml",) if not filecmp.cmp(tmp_path / name, BASE / name, shallow=False)]
    fresh_rules = sorted(p.name for p in (tmp_path / "rules").iterdir())
    assert fresh_rules == sorted(p.name for p in (BASE / "rules").iterdir())
    stale += [
        f"rules/{n}" for n in fresh_rules if not filecmp.cmp(tmp_path / "rules" / n, BASE / "rules" / n, shallow=False)
    ]
    assert not stale, f"stale generated files (run deploy/render-rules.sh): {stale}"


def _promtool_check(spec: dict[str, Any], tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    for file in ("prometheusrule.yaml", "rollbackd-alerts.yaml"):
        doc = yaml.safe_load((BASE / file).read_text())
        _promtool_check(doc["spec"], tmp_path, file)


def test_alertmanager_receiver_snippet_is_valid_config(tmp_path: Path) -> None:
    snippet = yaml.safe_load((DEPLOY / "alertmanager-receiver.yaml").read_text())
    (webhook,) = snippet["receivers"][0]["webhook_configs"]
    assert webhook["send_resolved"] is True
    assert webhook["max_alerts"] == 0
    assert webhook["url"].endswith(":9797/webhooks/alertmanager")
    assert webhook["http_config"]["authorization"]["credentials_file"]
    # Merged into a minimal configuration, Alertmanager's own checker accepts it.
    snippet["route"]["receiver"] = "default"
    snippet["receivers"].append({"name": "default"})
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(snippet))
    proc = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the container image (static: there is no Docker engine on the test machine) ------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_non_root_with_healthcheck() -> None:
    instructions = _dockerfile()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) == 2, "multi-stage: build the wheel, then install it"
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "the final USER must be a fixed numeric uid"
    assert int(uid) != 0, "the final USER must not be root"
    (health,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert "/healthz" in health
    assert "urllib" in health
    (entry,) = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entry == '["rollbackd", "run"]'
    # Everything the image copies exists in the build context.
    for word, rest in instructions:
        if word == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                assert (REPO / src).exists(), f"COPY source {src} is missing"
