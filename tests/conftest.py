"""Shared fixtures: a real store in a temp data dir (embedded SQLite, or PostgreSQL + S3 for the contract
tests that run on both: the `engine` fixture), and the anyio backend."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import pytest

from molar_mcp.compose import Embedded, open_embedded, open_store
from molar_mcp.store import SqliteTraceStore
from tests.engines import PgCluster, S3Endpoint, pg_cluster, s3_endpoint
from tests.servers import Served, start_server

ENGINES = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster for the whole run (each test gets its own database)."""
    with pg_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Endpoint]:
    """One S3 endpoint for the whole run (each test gets its own bucket)."""
    with s3_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def pg_url(pg: PgCluster) -> str:
    """The run's PostgreSQL database, migrated, with no rows (tests that need their own: `pg.new_database()`)."""
    return pg.clean_database()


@pytest.fixture
def s3_url(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """`s3://<fresh bucket>/molar`, with the standard S3 settings of the environment pointing at it."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"b{abs(hash(request.node.nodeid)) % 10**12}"
    s3.create_bucket(bucket)
    return f"s3://{bucket}/molar"


async def fetch(client: httpx2.AsyncClient, url: str | httpx2.URL) -> httpx2.Response:
    """GET through the app; a redirect to an object store's presigned URL is followed over the network."""
    if "X-Amz-Signature" in str(url):
        async with httpx2.AsyncClient() as direct:
            return await direct.get(url)
    response = await client.get(url)
    location = response.headers.get("location", "")
    if response.status_code == 302 and "X-Amz-Signature" in location:
        async with httpx2.AsyncClient() as direct:
            return await direct.get(location)
    return response


def engine_options(request: pytest.FixtureRequest) -> dict[str, str]:
    """`open_store`/`open_embedded` keywords of the engine `request.param` names: `{}` for the embedded
    store; a fresh PostgreSQL database and S3 bucket for the other."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("pg_url"), "blob_url": request.getfixturevalue("s3_url")}


@pytest.fixture
def engine() -> dict[str, str]:
    """The engine of `store` and `embedded`: the embedded store here. The contract suites (their conftest
    overrides this with `params=ENGINES` and `engine_options`) run on both engines."""
    return {}


if TYPE_CHECKING:
    from tests.apps.record import RecordedTraces, Recorder


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path, engine: dict[str, str]) -> Iterator[SqliteTraceStore]:
    """A real store in a temp data dir (the store alone, without the API around it), on each engine."""
    s = open_store(tmp_path / "data", **engine)
    yield s
    s.close()


@pytest.fixture
def embedded(tmp_path: Path, engine: dict[str, str]) -> Iterator[Embedded]:
    with open_embedded(tmp_path / "data", **engine) as emb:
        yield emb


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`molar-mcp serve --demo --no-auth` as a real process on a free 127.0.0.1 port."""
    srv = start_server(tmp_path / "data", "--demo")
    yield srv
    srv.process.terminate()
    try:
        srv.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.process.kill()


@pytest.fixture(scope="session")
def ticketshop() -> Iterator[str]:
    """The ticket shop test app (tests/apps/ticketshop.py) on a free port: its base URL."""
    from tests.apps.server import serve_ticketshop

    with serve_ticketshop() as base:
        yield base


@pytest.fixture(scope="session")
def pw_recorder() -> Iterator[Recorder]:
    """One headless Chromium driven by the Python `playwright` package, for recording traces."""
    from tests.apps.record import Recorder

    with Recorder() as rec:
        yield rec


@pytest.fixture(scope="session")
def recorded(ticketshop: str, pw_recorder: Recorder, tmp_path_factory: pytest.TempPathFactory) -> RecordedTraces:
    """Real trace.zip files of the ticket shop scenarios, each recorded once a session on first use."""
    from tests.apps.record import RecordedTraces

    return RecordedTraces(pw_recorder, ticketshop, tmp_path_factory.mktemp("pw-traces"))


# No test here skips: a missing component (Chromium, Node packages, PostgreSQL, the S3 endpoint, bubblewrap)
# fails its test. A skip that still happens (an `async def` test pytest could not run, say) therefore fails
# the run, and the summary names it. Counted on the controller (with pytest-xdist, where the workers'
# reports arrive) or in a plain run.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(f"{report.nodeid}: {report.longrepr}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPPED and not hasattr(session.config, "workerinput"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SKIPPED:
        terminalreporter.section("skipped tests fail this run")
        for line in _SKIPPED:
            terminalreporter.write_line(line)
