"""Throwaway certificates for loopback TLS, made with the ``openssl`` command line (OpenSSL 3).

``make_self_signed``: one certificate that is its own CA, valid for 127.0.0.1
and localhost (the pagerduty client refuses http; clients trust it as
``ca_file``). ``TestCa``: a CA of its own that issues server and client
certificates, for services that check both ends (Kafka's SASL_SSL and mTLS
listeners, Prometheus' ``--web.config.file``).
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def make_self_signed(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=rollbackd-test",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return TlsFiles(cert, key)


def _openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True)


@dataclass(frozen=True)
class TestCa:
    """A CA that signs leaf certificates; ``cert`` is what clients and servers trust."""

    __test__ = False  # not a pytest test class
    cert: Path
    key: Path

    @classmethod
    def create(cls, folder: Path, name: str = "rollbackd-test-ca") -> TestCa:
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / "ca.pem", folder / "ca-key.pem"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", str(key), "-out", str(cert),
        )  # fmt: skip
        return cls(cert, key)

    def issue(
        self, folder: Path, name: str, *, sans: str = "IP:127.0.0.1,DNS:localhost", client: bool = False
    ) -> TlsFiles:
        """A leaf certificate for ``name`` (its CN), signed by this CA; its key is unencrypted PKCS#8 PEM."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key, csr, ext = (folder / f"{name}{s}" for s in (".pem", "-key.pem", ".csr", ".ext"))
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        usage = "clientAuth" if client else "serverAuth"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial",
            "-days", "1", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return TlsFiles(cert, key)
