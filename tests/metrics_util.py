"""Reading ``/metrics`` the way Prometheus does, and asserting on what a test made the metrics do.

A family's mere presence proves nothing: prometheus_client exports unlabelled
counters, histograms and gauges from the moment they are declared, and the
registry is shared by everything that ran in the process before. So tests
take a snapshot before they act and assert on the difference (``delta``), or on
a gauge's value after it.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a text exposition: (name, labels) → value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return found


def value(snapshot: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in snapshot.items() if n == name and want <= set(ls))


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much ``name`` (with ``labels``) moved between two snapshots."""
    return value(after, name, **labels) - value(before, name, **labels)
