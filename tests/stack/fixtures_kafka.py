"""Pytest plugin: a session-wide single-node Kafka (``-p tests.stack.fixtures_kafka``).

The broker starts once per session in a temporary directory. When it cannot be
installed or started the fixture raises ``StackError``: the tests that need it
error out, they are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .kafka import Kafka


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    """A running ``Kafka``; clients connect to ``kafka.bootstrap`` (``127.0.0.1:PORT``)."""
    broker = Kafka(tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
