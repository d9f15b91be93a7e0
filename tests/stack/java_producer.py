"""A Java producer of deployment events (``tests/stack/java/DeployProducer.java``), as CI pipelines on the JVM run.

Compiled once with the machine's ``javac`` against the ``kafka-clients`` jar
of the stack's own Kafka (``scripts/stack/fetch-kafka.sh``) into
``$ROLLBACKD_CACHE/java-producer-<source hash>``; a changed source compiles
anew. ``send`` runs it in one JVM for a list of ``(codec, key, value)``
events: each run of one codec goes through one producer with that
``compression.type``, so they arrive in one batch compressed as the official
client compresses it (none, gzip, snappy, lz4, zstd).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .base import CACHE, StackError
from .kafka import Kafka

SOURCE = Path(__file__).parent / "java" / "DeployProducer.java"
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
TIMEOUT_S = 120.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not on PATH: install a JDK 17+ (scripts/stack/install-debian.sh)")
    return found


def build(kafka: Kafka) -> Path:
    """The folder holding ``DeployProducer.class``, compiled now if this source was not compiled before."""
    digest = hashlib.sha256(SOURCE.read_bytes() + kafka.version.encode()).hexdigest()[:12]
    out = CACHE / f"java-producer-{digest}"
    if (out / "DeployProducer.class").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    done = subprocess.run(
        [_tool("javac"), "-cp", f"{kafka.home / 'libs'}/*", "-d", str(tmp), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"javac DeployProducer.java failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def send(kafka: Kafka, topic: str, events: Sequence[tuple[str, str, bytes]]) -> list[tuple[str, int, int]]:
    """Publish ``(codec, key, value)`` events to ``topic`` on the PLAINTEXT listener; ``(codec, partition, offset)``."""
    classes = build(kafka)
    lines = "".join(f"{codec}\t{key}\t{value.decode()}\n" for codec, key, value in events)
    argv = [_tool("java"), "-Xmx128m", f"-Dlog4j2.configurationFile={kafka.home / 'log4j2.xml'}"]
    argv += ["-cp", f"{classes}:{kafka.home / 'libs'}/*", "DeployProducer", kafka.bootstrap, topic]
    done = subprocess.run(argv, input=lines, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise StackError(f"DeployProducer failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    sent = []
    for line in done.stdout.splitlines():
        if line.startswith("sent "):
            _, codec, partition, offset = line.split()
            sent.append((codec, int(partition), int(offset)))
    if len(sent) != len(events):
        raise StackError(f"DeployProducer acknowledged {len(sent)} of {len(events)} events:\n{done.stdout}")
    return sent
