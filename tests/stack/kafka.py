"""Apache Kafka as a single KRaft node (broker and controller in one JVM) on loopback.

The jars come from ``scripts/stack/fetch-kafka.sh`` (Maven Central, cached in
``$ROLLBACKD_CACHE/kafka-$KAFKA_VERSION``). ``Kafka.start`` formats the storage
once, starts ``kafka.Kafka`` as a plain java process on two free loopback ports
and waits until the log says ``Kafka Server started`` *and* the broker answers a
Metadata request on its bootstrap port. ``restart`` brings the same node back
on the same ports and data directory, for fault tests.

Besides the PLAINTEXT listener every test uses, the node has two secured
listeners, as production clusters do: ``SASL_SSL`` (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512 and unsecured OAUTHBEARER tokens) and ``SSL`` with client
certificates required (mutual TLS, as Strimzi's TLS listener). Their
certificates come from a CA generated for this broker (``tests.fakes.tls``);
the SCRAM user is created by the broker's own storage tool
(``kafka-storage format --add-scram``), the PLAIN user by the listener's JAAS
configuration.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import uuid
from pathlib import Path

from tests.fakes.tls import TestCa, TlsFiles

from .base import CACHE, REPO, Proc, StackError, free_port, log_tail, versions

START_TIMEOUT = float(os.environ.get("ROLLBACKD_KAFKA_START_TIMEOUT", "120"))
READY_LINE = "Kafka Server started"

_API_METADATA = 3
_API_VERSIONS = 18
SASL_USER = "rollbackd"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def _cluster_id() -> str:
    """A random cluster id as Kafka writes it: 16 bytes, URL-safe base64 without padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _kstr(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


class _Reader:
    """Reads the big-endian primitives of the (non-flexible) Kafka wire protocol."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode()


def _call(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> _Reader:
    """One request (header v1) and its response (header v0); returns a reader past the header."""
    frame = struct.pack(">hhi", api_key, version, correlation) + _kstr("rollbackd-stack") + body
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != correlation:
        raise StackError("kafka: response with the wrong correlation id")
    return reader


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("kafka closed the connection")
        buf += chunk
    return bytes(buf)


def metadata_brokers(host: str, port: int, timeout: float = 3.0) -> list[tuple[int, str, int]]:
    """The brokers ``(node_id, host, port)`` a Metadata request to ``host:port`` returns.

    Speaks just enough of the protocol: ApiVersions v0 to learn the Metadata
    versions, then a non-flexible Metadata request (v4..v8) for no topics.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        r = _call(sock, _API_VERSIONS, 0, 1, b"")
        if (err := r.take(">h")) != 0:
            raise StackError(f"kafka: ApiVersions error {err}")
        ranges: dict[int, tuple[int, int]] = {}
        for _ in range(r.take(">i")):
            key, low, high = r.take(">h"), r.take(">h"), r.take(">h")
            ranges[key] = (low, high)
        low, high = ranges.get(_API_METADATA, (99, -1))
        version = max(low, 4)
        if version > min(high, 8):
            raise StackError(f"kafka: no usable Metadata version in {low}..{high}")
        # topics: null array (-1) = all topics would be fetched; 0 = none.
        body = struct.pack(">ib", 0, 0)  # topics=[], allow_auto_topic_creation=false
        if version >= 8:
            body += struct.pack(">bb", 0, 0)  # include cluster/topic authorized operations
        r = _call(sock, _API_METADATA, version, 2, body)
        r.take(">i")  # throttle_time_ms
        brokers: list[tuple[int, str, int]] = []
        for _ in range(r.take(">i")):
            node = r.take(">i")
            bhost = r.string() or ""
            bport = r.take(">i")
            r.string()  # rack
            brokers.append((node, bhost, bport))
        return brokers


class Kafka:
    """One KRaft node (``process.roles=broker,controller``) under ``workdir``."""

    name = "kafka"

    def __init__(self, workdir: Path, start_timeout: float = START_TIMEOUT) -> None:
        pinned = versions()
        self.version: str = pinned["KAFKA_VERSION"]
        self.home: Path = CACHE / f"kafka-{self.version}"
        self.workdir: Path = workdir
        self.start_timeout = start_timeout
        self.data_dir: Path = workdir / "data"
        self.config: Path = workdir / "server.properties"
        self.log: Path = workdir / "kafka.log"
        self.port: int = 0
        self.controller_port: int = 0
        self.proc: Proc | None = None
        self.starts = 0
        self.sasl_port: int = 0
        self.ssl_port: int = 0
        self.sasl_user = SASL_USER
        self.sasl_password = "kafka-" + secrets.token_hex(12)  # the same for PLAIN and both SCRAM mechanisms
        self.tls_dir: Path = workdir / "tls"
        self.ca: TestCa | None = None
        self.client_cert: TlsFiles | None = None  # accepted by the SSL (mTLS) listener

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients; empty before the first ``start``."""
        return f"127.0.0.1:{self.port}" if self.port else ""

    @property
    def sasl_bootstrap(self) -> str:
        """``host:port`` of the SASL_SSL listener."""
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_port else ""

    @property
    def ssl_bootstrap(self) -> str:
        """``host:port`` of the SSL listener that requires a client certificate."""
        return f"127.0.0.1:{self.ssl_port}" if self.ssl_port else ""

    @property
    def ca_file(self) -> Path:
        if self.ca is None:
            raise StackError("kafka: not started, no CA yet")
        return self.ca.cert

    @property
    def sasl_password_file(self) -> Path:
        """The SASL user's password, in a file as a mounted Secret holds it (for configs written by hand)."""
        return self.tls_dir / "sasl-password"

    def endpoints(self) -> dict[str, str]:
        found = {"bootstrap": self.bootstrap, "sasl_ssl": self.sasl_bootstrap, "ssl": self.ssl_bootstrap}
        if self.ca is not None:
            found |= {"ca_file": str(self.ca_file), "sasl_user": self.sasl_user,
                      "sasl_password_file": str(self.sasl_password_file)}  # fmt: skip
        return found

    def _make_tls(self) -> None:
        """The CA, the broker's certificate (key and chain in one PEM keystore) and a client certificate."""
        if self.ca is not None:
            return
        self.ca = TestCa.create(self.tls_dir, "rollbackd-test-kafka-ca")
        server = self.ca.issue(self.tls_dir, "kafka-broker")
        (self.tls_dir / "keystore.pem").write_text(server.key.read_text() + server.cert.read_text())
        self.client_cert = self.ca.issue(self.tls_dir, "rollbackd-client", sans="DNS:rollbackd-client", client=True)
        self.sasl_password_file.write_text(self.sasl_password + "\n")
        self.sasl_password_file.chmod(0o600)

    def _security_properties(self) -> list[str]:
        host = "127.0.0.1"
        jaas_scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        jaas_plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{self.sasl_user}="{self.sasl_password}";'
        )
        jaas_oauth = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.tls_dir / 'keystore.pem'}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca_file}",
            "listener.name.ssl.ssl.client.auth=required",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
            f"listener.name.sasl_ssl.plain.sasl.jaas.config={jaas_plain}",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={jaas_scram}",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas_scram}",
            f"listener.name.sasl_ssl.oauthbearer.sasl.jaas.config={jaas_oauth}",
            f"# secured listeners on {host}:{self.sasl_port} (SASL_SSL) and {host}:{self.ssl_port} (SSL, mTLS)",
        ]

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java or not Path(java).exists():
            raise StackError("kafka: no java on PATH (install a JDK 17+, see scripts/stack/install.sh)")
        return java

    def _classpath(self) -> str:
        libs = self.home / "libs"
        if not (self.home / ".complete").exists() or not libs.is_dir():
            raise StackError(
                f"kafka {self.version} is not installed in {self.home}: run scripts/stack/install.sh "
                f"(or {REPO / 'scripts' / 'stack' / 'fetch-kafka.sh'})"
            )
        return f"{libs}/*"

    def _log_flag(self) -> str:
        if self.major >= 4:
            return f"-Dlog4j2.configurationFile={self.home / 'log4j2.xml'}"
        return f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}"

    def _properties(self) -> str:
        host = "127.0.0.1"
        listeners = (
            f"PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{self.controller_port},"
            f"SASL_SSL://{host}:{self.sasl_port},SSL://{host}:{self.ssl_port}"
        )
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"listeners={listeners}",
            f"advertised.listeners={listeners}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.data_dir}",
            "num.partitions=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "delete.topic.enable=true",
        ]
        if self.major >= 4:
            lines += [
                f"controller.quorum.bootstrap.servers={host}:{self.controller_port}",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
            ]
        else:
            lines.append(f"controller.quorum.voters=1@{host}:{self.controller_port}")
        return "\n".join(lines + self._security_properties()) + "\n"

    def _format(self, java: str, classpath: str) -> None:
        argv = [java, "-Xmx256m", self._log_flag(), "-cp", classpath, "kafka.tools.StorageTool", "format"]
        argv += ["-t", _cluster_id(), "-c", str(self.config)]
        for mechanism in SCRAM_MECHANISMS:  # the broker's own tool creates the SCRAM user
            argv += ["--add-scram", f"{mechanism}=[name={self.sasl_user},password={self.sasl_password}]"]
        if self.major >= 4:
            argv.append("--standalone")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.start_timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"kafka: storage format timed out after {self.start_timeout:.0f}s") from exc
        if done.returncode != 0:
            raise StackError(f"kafka: storage format failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def _ready(self, log_offset: int) -> bool:
        with self.log.open("rb") as fh:
            fh.seek(log_offset)
            if READY_LINE.encode() not in fh.read():
                return False
        return any(port == self.port for _, _, port in metadata_brokers("127.0.0.1", self.port))

    def start(self) -> dict[str, str]:
        """Format (first time only), start the node and wait until it serves metadata."""
        if self.proc is not None and self.proc.alive():
            return self.endpoints()
        java, classpath = self._java(), self._classpath()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            ports: set[int] = set()
            while len(ports) < 4:
                ports.add(free_port())
            self.port, self.controller_port, self.sasl_port, self.ssl_port = sorted(ports)
        self._make_tls()
        self.config.write_text(self._properties())
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, classpath)
        log_offset = self.log.stat().st_size if self.log.exists() else 0
        argv = [
            java,
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            self._log_flag(),
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.config),
        ]
        self.starts += 1
        self.proc = Proc(self.name, argv, self.log, cwd=self.workdir).start()
        try:
            self.proc.wait_until(lambda: self._ready(log_offset), self.start_timeout, f"broker on {self.bootstrap}")
        except BaseException:
            self.proc.stop()
            raise
        return self.endpoints()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the JVM (SIGTERM: controlled shutdown, SIGKILL after ``timeout``). Data and ports are kept."""
        proc = self.proc
        if proc is None or proc.popen is None or proc.popen.poll() is not None:
            return
        # Reap the JVM ourselves: ``Proc.stop`` polls the process group with
        # signal 0, which an unreaped (zombie) leader still answers, so it
        # always waited the whole timeout before.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.popen.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            proc.stop(timeout=5.0)  # SIGTERM again, then SIGKILL

    def restart(self) -> dict[str, str]:
        """Stop and start the same node: same ports, same data directory, same cluster id."""
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

    def batch_codecs(self, topic: str, partition: int = 0) -> list[tuple[int, int, str]]:
        """``(base offset, last offset, codec)`` of every record batch as the broker stored it.

        Read from the partition's log segments by the broker's own ``kafka.tools.DumpLogSegments``:
        the codec a producer compressed a batch with, as a consumer will receive it.
        """
        segments = sorted((self.data_dir / f"{topic}-{partition}").glob("*.log"))
        if not segments:
            raise StackError(f"kafka: no log segment for {topic}-{partition}")
        argv = [self._java(), "-Xmx128m", self._log_flag(), "-cp", self._classpath(), "kafka.tools.DumpLogSegments"]
        argv += ["--files", ",".join(str(s) for s in segments)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=self.start_timeout, check=False)
        if done.returncode != 0:
            raise StackError(f"kafka: DumpLogSegments failed ({done.returncode}):\n{done.stderr[-2000:]}")
        batches = []
        for line in done.stdout.splitlines():
            if line.startswith("baseOffset:"):
                fields = dict(zip(line.split()[::2], line.split()[1::2], strict=False))
                batches.append((int(fields["baseOffset:"]), int(fields["lastOffset:"]), fields["compresscodec:"]))
        return batches
