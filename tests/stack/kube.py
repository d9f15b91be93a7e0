"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager, scheduler, KWOK.

The binaries come from ``scripts/stack/build-kube.sh`` (built from the Go module
proxy into a versioned cache folder). Nothing here fakes the API server: the real
deployment and ReplicaSet controllers write revisions and roll out, and KWOK plays
the kubelet of one fake node (``kwok-node-0``) so pods become Running/Ready.

One certificate (CN=admin, O=system:masters) serves as the apiserver's serving
certificate, everyone's client certificate and the service-account key.

KWOK's stages are the ones its module ships (collected into the cache at build
time) plus the project's own in ``tests/stack/kwok/``, composed at each start
(``kwok_stages``): a pod labelled ``rollbackd.test/hold-not-ready`` is held
Running and not Ready, and KWOK's ``pod-ready`` stage leaves it alone.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from tests.stack.base import CACHE, REPO, Proc, StackError, free_port, http_ok, log_tail, versions

NODE_NAME = "kwok-node-0"
SERVICE_CIDR = "10.96.0.0/16"
NODE_LEASE_SECONDS = 40
SANS = (
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
    "DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
)


HOLD_NOT_READY = "rollbackd.test/hold-not-ready"  # a pod with this label stays Running and not Ready
PROJECT_STAGES = REPO / "tests" / "stack" / "kwok"


def kwok_stages(shipped: Path) -> str:
    """KWOK's shipped stages, ``pod-ready`` kept off held pods, then the project's stages (one YAML stream)."""
    docs = [d for d in yaml.safe_load_all(shipped.read_text()) if d]
    ready = [d for d in docs if d.get("kind") == "Stage" and d["metadata"]["name"] == "pod-ready"]
    if len(ready) != 1:
        raise StackError(f"{shipped}: expected one pod-ready stage, found {len(ready)}")
    ready[0]["spec"]["selector"]["matchExpressions"].append(
        {"key": f'.metadata.labels["{HOLD_NOT_READY}"]', "operator": "DoesNotExist"}
    )
    for path in sorted(PROJECT_STAGES.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return yaml.safe_dump_all(docs, sort_keys=False)


def kube_dir() -> Path:
    """The versioned cache folder that ``build-kube.sh`` fills."""
    v = versions()
    return CACHE / f"kube-{v['KUBE_VERSION']}-etcd-{v['ETCD_VERSION']}-kwok-{v['KWOK_VERSION']}"


def host_ipv4() -> str:
    """A non-loopback IPv4 address of this host (kube-apiserver refuses to advertise loopback)."""
    candidates: list[str] = []
    for probe in ("192.0.2.1", "10.255.255.255", "8.8.8.8"):
        # connect() on a UDP socket only picks a route and a source address; it sends nothing.
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            candidates.append(str(s.getsockname()[0]))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5, check=False)
        candidates.extend(out.stdout.split())
    for ip in candidates:
        parts = ip.split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts) and not ip.startswith(("127.", "0.")):
            return ip
    raise StackError(f"no non-loopback IPv4 address found for --advertise-address (saw {candidates})")


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StackError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def make_pki(pki: Path) -> None:
    """One self-signed CA and one admin certificate for server and client use."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
        "-subj", "/CN=rollbackd-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", "ca.crt",
        cwd=pki,
    )  # fmt: skip
    _openssl("genrsa", "-out", "admin.key", "2048", cwd=pki)
    _openssl(
        "req",
        "-new",
        "-key",
        "admin.key",
        "-subj",
        "/O=system:masters/CN=admin",
        "-out",
        "admin.csr",
        cwd=pki,
    )
    (pki / "admin.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName={SANS}\n"
    )
    _openssl(
        "x509", "-req", "-in", "admin.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-sha256", "-days", "3650", "-extfile", "admin.ext", "-out", "admin.crt",
        cwd=pki,
    )  # fmt: skip


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + KWOK with one fake node."""

    name = "kube"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.home = kube_dir()
        self.bin = self.home / "bin"
        self.pki = workdir / "pki"
        self.logs = workdir / "logs"
        self.kubeconfig = workdir / "kubeconfig"
        self.apiserver_port = 0
        self.server = ""
        self.etcd_url = ""
        self.timings: dict[str, float] = {}
        self.etcd: Proc | None = None
        self.apiserver: Proc | None = None
        self.controller_manager: Proc | None = None
        self.scheduler: Proc | None = None
        self.kwok: Proc | None = None
        self._apiserver_argv: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Start everything, create the fake node; return the kubeconfig path and the server URL."""
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return {"kubeconfig": str(self.kubeconfig), "server": self.server}

    def _start(self) -> None:
        if not (self.home / ".complete").exists():
            raise StackError(
                f"Kubernetes binaries are not built ({self.home}/.complete missing): "
                f"run `bash {REPO}/scripts/stack/build-kube.sh` (or scripts/stack/install.sh) first"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        advertise = host_ipv4()

        with self._timed("pki"):
            make_pki(self.pki)
        with self._timed("etcd"):
            self._start_etcd()

        self.apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self._write_kubeconfig()
        self._apiserver_argv = self._apiserver_args(advertise)
        with self._timed("apiserver"):
            self.start_apiserver()

        with self._timed("controllers"):
            self._start_controllers()
        with self._timed("kwok"):
            self._start_kwok()
        with self._timed("node"):
            self._create_node()
        with self._timed("default-serviceaccount"):
            self._wait_for(
                lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
                timeout=120,
                what="ServiceAccount default/default",
                proc=self.controller_manager,
            )

    def stop(self) -> None:
        """Stop every process, newest first. Safe to call twice."""
        for proc in (self.kwok, self.scheduler, self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop()

    # -- apiserver, also for fault tests -----------------------------------------------------------

    def stop_apiserver(self, timeout: float = 10.0) -> None:
        """Stop kube-apiserver only; etcd, controllers and KWOK keep running and retry.

        It stops listening at once on SIGTERM but then drains open watches; after ``timeout``
        seconds it is killed.
        """
        if self.apiserver is not None:
            self.apiserver.stop(timeout=timeout)

    def start_apiserver(self, timeout: float = 180.0) -> None:
        """(Re)start kube-apiserver on the same port with the same etcd; wait for /readyz."""
        if not self._apiserver_argv:
            raise StackError("kube-apiserver was never configured: call start() first")
        if self.apiserver is not None and self.apiserver.alive():
            return
        self.apiserver = Proc("kube-apiserver", self._apiserver_argv, self.logs / "kube-apiserver.log").start()
        ctx = self.ssl_context()
        self.apiserver.wait_until(
            lambda: http_ok(f"{self.server}/readyz", context=ctx), timeout, "/readyz answering 200"
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the test CA and presenting the admin certificate."""
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    # -- kubectl -------------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 120.0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; raise StackError on failure when ``check``."""
        argv = [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"kubectl {' '.join(args)}: no answer after {timeout:.0f}s") from exc
        if check and proc.returncode != 0:
            raise StackError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def kubectl_json(self, *args: str) -> dict[str, object]:
        """``kubectl get ... -o json`` parsed."""
        out = json.loads(self.kubectl(*args, "-o", "json").stdout)
        if not isinstance(out, dict):
            raise StackError(f"kubectl {' '.join(args)}: expected a JSON object")
        return out

    # -- internals -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _timed(self, what: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.timings[what] = time.monotonic() - t0

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.etcd = Proc(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=rollbackd",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=rollbackd={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.logs / "etcd.log",
        ).start()
        self.etcd.wait_until(lambda: http_ok(f"{self.etcd_url}/health"), 60, "/health answering 200")

    def _apiserver_args(self, advertise: str) -> list[str]:
        pki = self.pki
        return [
            str(self.bin / "kube-apiserver"),
            "--bind-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--advertise-address={advertise}",
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'admin.crt'}",
            f"--tls-private-key-file={pki / 'admin.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'admin.key'}",
            f"--service-account-signing-key-file={pki / 'admin.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
        ]

    def _write_kubeconfig(self) -> None:
        pki = self.pki
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "rollbackd",
                    "cluster": {"server": self.server, "certificate-authority": str(pki / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(pki / "admin.crt"),
                        "client-key": str(pki / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "rollbackd", "context": {"cluster": "rollbackd", "user": "admin"}}],
            "current-context": "rollbackd",
        }
        # JSON is YAML: every Kubernetes client reads it.
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    def _start_controllers(self) -> None:
        pki, kc = self.pki, str(self.kubeconfig)
        common = [
            f"--kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]
        self.controller_manager = Proc(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                *common,
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                f"--service-account-private-key-file={pki / 'admin.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # KWOK cannot renew the node Lease while the apiserver is down; with the default 50 s
                # a 30 s apiserver outage (fault tests) would also flip the node NotReady and taint it.
                "--node-monitor-grace-period=120s",
            ],
            self.logs / "kube-controller-manager.log",
        ).start()
        self.scheduler = Proc(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                *common,
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
            ],
            self.logs / "kube-scheduler.log",
        ).start()

    def _start_kwok(self) -> None:
        port = free_port()
        home = self.workdir / "kwok-home"  # keeps ~/.kwok/kwok.yaml of the host out of the way
        home.mkdir(parents=True, exist_ok=True)
        stages = self.workdir / "kwok-stages.yaml"
        stages.write_text(kwok_stages(self.home / "kwok-stages.yaml"))
        self.kwok = Proc(
            "kwok",
            [
                str(self.bin / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                "-c",
                str(stages),
                "--manage-all-nodes=true",
                # The bare binary defaults to 0 = no node Lease (only kwokctl defaults to 40): without a
                # Lease the node lifecycle controller marks the node NotReady every ~50 s and KWOK
                # re-initializes it, so the node flaps. The heartbeat-with-lease stage assumes Leases.
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                f"--server-address=127.0.0.1:{port}",
            ],
            self.logs / "kwok.log",
            env={"HOME": str(home)},
        ).start()
        self.kwok.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "/healthz answering 200")

    def _create_node(self) -> None:
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "status": {"capacity": resources, "allocatable": resources},
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(node))
        self._wait_for(self._node_schedulable, timeout=120, what=f"node {NODE_NAME} Ready", proc=self.kwok)

    def _node_schedulable(self) -> bool:
        """Ready, and the node controller has lifted its not-ready/unreachable taints."""
        node = self.kubectl_json("get", "node", NODE_NAME)
        status = node.get("status")
        spec = node.get("spec")
        conditions = status.get("conditions", []) if isinstance(status, dict) else []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        taints = spec.get("taints", []) if isinstance(spec, dict) else []
        blocking = [t for t in taints if str(t.get("key", "")).startswith("node.kubernetes.io/")]
        return ready and not blocking

    def _wait_for(self, ready: Callable[[], bool], timeout: float, what: str, proc: Proc | None) -> None:
        """Poll ``ready`` (errors count as not yet); fail with every component's log tail."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise StackError(f"{proc.name} exited while waiting for {what}:\n{describe_failure(self)}")
            try:
                if ready():
                    return
            except StackError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise StackError(f"no {what} after {timeout:.0f}s (last error: {last or 'none'}):\n{describe_failure(self)}")


def describe_failure(cluster: KubeCluster) -> str:
    """Log tails of every component, for a failure message."""
    parts = []
    for proc in (
        cluster.etcd,
        cluster.apiserver,
        cluster.controller_manager,
        cluster.scheduler,
        cluster.kwok,
    ):
        if proc is not None:
            parts.append(f"--- {proc.name} ({'alive' if proc.alive() else 'dead'}):\n{log_tail(proc.log, 15)}")
    return "\n".join(parts)
