"""The real services the tests run against, started as plain processes on loopback.

Each service is a class with ``start(workdir)`` returning its endpoints and
``stop()``; ``python -m tests.stack up|down|status`` runs them detached for a
person, and the pytest fixtures in ``tests/conftest.py`` run them for a session.
Binaries come from ``scripts/stack/install.sh`` (cached, versioned folders).
"""
