"""Real engines for the store contract tests: a throwaway PostgreSQL cluster (Debian's postgresql-15
binaries, run as the `postgres` user in a temp dir on a free port) and an S3 endpoint (`moto` server)
on 127.0.0.1, talked to with the real S3 client."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.servers import free_port

PG_BIN = Path(os.environ.get("MOLAR_PG_BIN", "/usr/lib/postgresql/15/bin"))


_OWNER_FILE = "owner"


def _process_token(pid: int) -> str | None:
    """`pid` and its start time (clock ticks since boot), or None when no such process runs: a pid the
    kernel reuses for another process gets another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces and parentheses); the start time is field 22.
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"


def reap_orphan_clusters(tmp: Path | None = None) -> list[Path]:
    """Stop and remove the clusters whose test process is gone (killed by a timeout or SIGKILL, it never
    reached `pg_cluster`'s `finally`): each cluster's dir names its owner by pid and start time. Clusters
    of live processes, and dirs without an owner file, are left alone. Returns the dirs removed."""
    removed = []
    for root in sorted(Path(tmp or tempfile.gettempdir()).glob("molar-pg-*")):
        try:
            owner = (root / _OWNER_FILE).read_text().strip()
        except OSError:
            continue
        if _process_token(int(owner.split()[0])) == owner:
            continue
        _stop(root / "data")
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


def _stop(data: Path) -> None:
    if (data / "postmaster.pid").exists():
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run the server tools as `postgres` when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PgCluster:
    """A running throwaway cluster; `new_database()` hands each test its own empty database."""

    root: Path
    port: int
    # The server's role, as in production: not a superuser (a superuser passes row-level security).
    user: str = "molar_app"
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _shared: str | None = None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def admin_url(self, dbname: str = "postgres") -> str:
        return f"postgresql://molar@127.0.0.1:{self.port}/{dbname}"

    def clean_database(self) -> str:
        """The run's shared database, every component migrated, emptied of rows, its sequences restarted."""
        if self._shared is None:
            from molar_mcp.compose import open_embedded

            self._shared = self.new_database("shared")
            with open_embedded(self.root / "scratch", database_url=self._shared):
                pass
        with psycopg.connect(self._shared, autocommit=True) as conn:
            # What TRUNCATE of every table RESTART IDENTITY leaves, for less: the server's TRUNCATE of all 27
            # tables took 0.3-0.5 s a test. Truncated: the tables written since the last clean (TRUNCATE leaves a
            # heap of 0 bytes; a table emptied again by a test's DELETE still has pages) with the tables that refer
            # to them; restarted: the sequences of tables drawn from since (a rolled-back insert draws too).
            used = [
                r[0]
                for r in conn.execute(
                    "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                    " AND relkind = 'r' AND relname <> 'schema_versions' AND pg_relation_size(oid) > 0"
                ).fetchall()
            ]
            if used:
                names = ", ".join(f'"{t}"' for t in used)
                conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")  # CASCADE: the tables that refer to them
            drawn = conn.execute(
                "SELECT s.relname FROM pg_class s"
                " JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')"
                " JOIN pg_class t ON t.oid = d.refobjid"
                " WHERE s.relkind = 'S' AND s.relnamespace = current_schema()::regnamespace"
                " AND t.relname <> 'schema_versions'"
                " AND CASE WHEN s.relkind = 'S' THEN pg_sequence_last_value(s.oid) END IS NOT NULL"
            ).fetchall()
            for (name,) in drawn:
                conn.execute(f'ALTER SEQUENCE "{name}" RESTART')
        return self._shared

    def new_database(self, prefix: str = "t") -> str:
        with self._lock:
            name = f"{prefix}_{next(self._counter)}"
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {self.user}')
        return self.url(name)


@contextmanager
def pg_cluster(settings: str = "") -> Iterator[PgCluster]:
    """initdb + pg_ctl start in a temp dir owned by `postgres`; stopped and removed at the end (and, when the
    process dies before its end, by the next `pg_cluster` on this machine). `settings`: more `-c name=value`
    server options (after the defaults, so they win; the benchmarks use it)."""
    if not (PG_BIN / "initdb").is_file():
        raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN}: install postgresql-15 (.ci/run does)")
    reap_orphan_clusters()
    root = Path(tempfile.mkdtemp(prefix="molar-pg-"))
    (root / _OWNER_FILE).write_text(f"{_process_token(os.getpid())}\n")
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    port = free_port()
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "molar",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB"
        ) + (f" {settings}" if settings else "")
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )
        cluster = PgCluster(root=root, port=port)
        with psycopg.connect(cluster.admin_url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {cluster.user} LOGIN NOSUPERUSER")
        yield cluster
    finally:
        _stop(data)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class S3Endpoint:
    url: str
    region: str = "us-east-1"
    access_key: str = "molar-test"
    secret_key: str = "molar-test-secret"
    _client: Any = None

    def env(self) -> dict[str, str]:
        """The standard S3 settings of the environment, as a replica would be configured."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3",
                endpoint_url=self.url,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


@contextmanager
def s3_endpoint() -> Iterator[S3Endpoint]:
    """`moto` speaking the S3 wire protocol on a free 127.0.0.1 port (threaded, in this process)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Endpoint(url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()
