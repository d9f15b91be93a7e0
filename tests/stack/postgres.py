"""PostgreSQL from Debian, run as a plain ``postgres`` process for the tests.

``initdb`` writes a fresh cluster into a temp folder, and ``postgres`` serves it
on a free loopback port with ``fsync=off`` (throwaway data, fast) and without a
Unix socket. PostgreSQL refuses to run as root, so as root both run as the
system user ``rollbackd-test`` (created on first use) through ``runuser``; the
cluster lives in its own folder under the system temp dir, because pytest's
temp folders are readable by root only.

The superuser ``rollbackd`` gets a random password and TCP logins need it
(scram-sha-256). ``start()`` creates the database ``rollbackd`` and returns
``{"dsn": "postgresql+asyncpg://rollbackd:PASS@127.0.0.1:PORT/rollbackd"}``.

Binaries: ``/usr/lib/postgresql/<newest version>/bin``, installed by
``scripts/stack/install-debian.sh``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.stack.base import Proc, StackError, free_port, log_tail

PG_ROOT = Path("/usr/lib/postgresql")
TEST_USER = "rollbackd-test"
SUPERUSER = "rollbackd"
DATABASE = "rollbackd"
START_ATTEMPTS = 3


def pg_bindir(root: Path = PG_ROOT) -> Path:
    """The ``bin`` folder of the newest PostgreSQL installed from Debian."""
    found: list[tuple[int, Path]] = []
    for candidate in root.glob("*/bin"):
        version = candidate.parent.name
        if re.fullmatch(r"\d+", version) and (candidate / "postgres").is_file():
            found.append((int(version), candidate))
    if not found:
        raise StackError(f"no PostgreSQL in {root}/*/bin: install it with scripts/stack/install-debian.sh")
    return max(found)[1]


def ensure_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """The system user ``name``, created (no home, no login shell) if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # 9: created meanwhile by a concurrent session
    if result.returncode not in (0, 9):
        raise StackError(f"useradd {name} failed: {result.stderr.strip()}")
    return pwd.getpwnam(name)


class Postgres:
    """One throwaway PostgreSQL cluster on a free loopback port."""

    name = "postgres"
    startup_timeout = 120.0

    def __init__(self, workdir: Path, *, port: int | None = None, bindir: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fixed_port = port
        self._bindir = bindir
        self.port = 0
        self.password = secrets.token_hex(16)
        self.base: Path | None = None  # owned by the user postgres runs as
        self.proc: Proc | None = None
        self.log = self.workdir / "postgres.log"
        self.as_root = os.geteuid() == 0

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = pg_bindir()
        return self._bindir

    @property
    def dsn(self) -> str:
        """SQLAlchemy URL for the ``rollbackd`` database (asyncpg driver)."""
        return self.dsn_for(DATABASE)

    def dsn_for(self, database: str) -> str:
        """SQLAlchemy URL (asyncpg driver) for ``database`` on this server."""
        return f"postgresql+asyncpg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def libpq_dsn(self) -> str:
        """The same as a libpq/asyncpg URL."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _as_user(self, argv: Sequence[str]) -> list[str]:
        return ["runuser", "-u", TEST_USER, "--", *argv] if self.as_root else list(argv)

    def _run(self, argv: Sequence[str], what: str, timeout: float = 180.0) -> str:
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}
        try:
            result = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
                env=env,
                cwd=self.base or self.workdir,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"postgres: {what} timed out after {timeout:.0f}s") from exc
        if result.returncode != 0:
            raise StackError(f"postgres: {what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result.stdout

    def _initdb(self) -> Path:
        base = Path(tempfile.mkdtemp(prefix="rollbackd-pg-"))
        self.base = base
        data = base / "data"
        data.mkdir(mode=0o700)
        pwfile = base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            user = ensure_user()
            for path in (base, data, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            self._as_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]
            ),
            "initdb",
        )
        pwfile.unlink()
        return data

    def _ready(self) -> bool:
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
            check=False,
            timeout=10,
        )
        return result.returncode == 0

    def start(self) -> dict[str, str]:
        """initdb, start ``postgres``, wait for ``pg_isready``, create the database; raise ``StackError``."""
        if self.proc is not None and self.proc.alive():
            return {"dsn": self.dsn}
        data = self._initdb()
        for attempt in range(1 if self.fixed_port else START_ATTEMPTS):
            self.port = self.fixed_port or free_port()
            try:
                self._launch(data)
                break
            except StackError:
                self._stop_process()
                if attempt + 1 >= START_ATTEMPTS or "already in use" not in log_tail(self.log, 10):
                    self._drop_files()
                    raise
        try:
            self.create_database(DATABASE)
        except StackError:
            self.stop()
            raise
        return {"dsn": self.dsn}

    def _launch(self, data: Path) -> None:
        """Run ``postgres`` on ``data`` at ``self.port`` and wait until it answers."""
        argv = self._as_user(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={self.port}",
                "-c",
                "unix_socket_directories=",  # Debian's default folder is not ours to write
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
                "-c",
                "log_min_messages=warning",
            ]
        )
        self.proc = Proc(self.name, argv, self.log, cwd=self.base).start()
        self.proc.wait_until(self._ready, self.startup_timeout, "pg_isready")

    def outage(self) -> None:
        """Fault injection: fast shutdown of the server, keeping its data and port for ``recover``."""
        self._stop_process()

    def recover(self) -> None:
        """Start the server again after ``outage``: same data, same port, same password."""
        if self.base is None:
            raise StackError("postgres: recover() without a cluster (was it stopped for good?)")
        self._launch(self.base / "data")

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (default: a fresh random name); its SQLAlchemy URL."""
        name = name or f"rollbackd_{secrets.token_hex(6)}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self._run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-w", name],
            f"createdb {name}",
        )
        return self.dsn_for(name)

    async def new_database(self) -> str:
        """``create_database()`` for async tests: one fresh database per test; its SQLAlchemy URL."""
        return await asyncio.to_thread(self.create_database)

    def psql(self, sql: str) -> str:
        """Run ``sql`` with psql over TCP; unaligned tuples-only output."""
        return self._run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-w",
                "-d",
                DATABASE,
                "-v",
                "ON_ERROR_STOP=1",
                "-XAtc",
                sql,
            ],
            "psql",
        )

    def _stop_process(self) -> None:
        """Fast shutdown (SIGINT: abort open sessions), then SIGTERM/SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or not proc.alive():
            return
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.stop(timeout=10.0)

    def _drop_files(self) -> None:
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def stop(self) -> None:
        """Stop the server and delete the cluster; the log stays in the workdir."""
        self._stop_process()
        self._drop_files()
        self.port = 0
