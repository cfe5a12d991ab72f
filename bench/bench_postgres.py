"""Scale-out benchmark: the same figures on the embedded store and on PostgreSQL + S3, same machine, same run.

    PYTHONPATH=. .venv/bin/python bench/bench_postgres.py [--traces 20000] [--iterations 100]
        [--live-events 40000] [--ingests 3] [--json out.json] [--only sqlite|postgres] [--no-live]
        [--sqlite-dir DIR] [--database-url URL --admin-url URL]

With `--sqlite-dir` (a data dir bench/make_store.py built) and `--database-url`/`--admin-url` (a database
it filled, and its owner or a superuser), the stores are used as they are (a 1,000,000-trace store takes
long to build: build it once, measure it many times); the 10,000-event trace is added to them each run.

For each engine: fill N traces (bench/make_store.py's generator: rows straight into SQLite, COPY into
PostgreSQL), then through real `molar-mcp
serve --no-auth` processes: `GET /v1/traces?status=failed` and `?q=` over REST, MCP `get_trace` over
streamable HTTP, bundle ingest (a 10,000-event trace into the store) and live append (events/s, through two
replicas at once on PostgreSQL, one process on SQLite). PostgreSQL is a throwaway cluster of the Debian
binaries and S3 a moto server, as in the tests (tests/engines.py). Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx2
from make_store import build, build_pg
from tests.engines import pg_cluster, s3_endpoint
from tests.long_run import record_long_run
from tests.servers import Served, start_server

from molar_mcp.compose import open_store
from molar_mcp.ingest import read_bundle
from molar_mcp.store import LOCAL_ORG_ID
from molar_mcp.store.port import org_scope

BATCH = 100
PG_SETTINGS = (
    "-c shared_buffers=2GB -c effective_cache_size=8GB -c work_mem=32MB -c maintenance_work_mem=512MB"
    " -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_wal_size=8GB"
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc): it does not stretch with the machine's load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends_cpu(admin_url: str | None) -> float:
    """CPU so far of the database's server processes serving this database (PostgreSQL on this machine)."""
    if admin_url is None:
        return 0.0
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a connection closed meanwhile
            total += cpu_seconds(pid)
    return total


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "min": round(min(samples), 2),
        "p50": round(statistics.median(samples), 2),
        "p95": round(pct(samples, 0.95), 2),
        "max": round(max(samples), 2),
    }


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(5):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def fill(
    engine: dict[str, str], data_dir: Path, n: int, admin_url: str | None, prebuilt: bool, ingests: int = 3
) -> str:
    """N traces (bench/make_store.py: straight into SQLite, or COPY into PostgreSQL; none when `prebuilt`)
    plus one 10,000-event trace stored `ingests` times through the store, scoped to its org as a request is
    (the bundle ingest rate, and the CPU it takes); returns its id."""
    t = time.perf_counter()
    if prebuilt:
        pass
    elif engine:
        assert admin_url is not None
        build_pg(data_dir, engine["database_url"], admin_url, n, 10, 7)
    else:
        build(data_dir, n, 10, 7)
    RESULTS[LABEL]["build_s"] = round(time.perf_counter() - t)
    store = open_store(data_dir, **engine)
    with store.db.read() as conn:
        RESULTS[LABEL]["traces"] = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
    parsed = read_bundle(record_long_run(10_000))
    rates, own_cpu, db_cpu = [], [], []
    big_id = ""
    for _ in range(ingests):
        t, c, d = time.perf_counter(), time.process_time(), backends_cpu(admin_url)
        with org_scope(LOCAL_ORG_ID):  # as a request to the server is
            big_id, _ = store.add_trace(LOCAL_ORG_ID, parsed.trace, parsed.blobs)
        rates.append(len(parsed.trace.events) / (time.perf_counter() - t))
        own_cpu.append(time.process_time() - c)
        db_cpu.append(backends_cpu(admin_url) - d)
    store.close()
    # CPU per 10,000 events: the storing process (rows, step numbers, search text) and, on PostgreSQL,
    # the database's server processes (parsing, indexes, WAL).
    RESULTS[LABEL]["bundle_ingest_cpu_ms"] = {
        "process_p50": round(statistics.median(own_cpu) * 1000),
        "database_p50": round(statistics.median(db_cpu) * 1000),
    }
    RESULTS[LABEL]["bundle_ingest_events_per_s"] = {
        "min": round(min(rates)),
        "p50": round(statistics.median(rates)),
        "max": round(max(rates)),
    }
    return big_id


async def timed_cpu(name: str, pid: int, fn: Callable[[], Awaitable[object]], n: int) -> None:
    """`timed`, and the serving process's CPU per call (ms) beside it."""
    before = cpu_seconds(pid)
    samples = await timed(fn, n)
    RESULTS[LABEL][name] = summary(samples)
    RESULTS[LABEL][name]["server_cpu_ms_per_call"] = round((cpu_seconds(pid) - before) * 1000 / (n + 5), 2)


async def rest_and_mcp(base: str, pid: int, big_id: str, iterations: int) -> None:
    from mcp.client import Client

    async with httpx2.AsyncClient(base_url=base, timeout=60) as http:

        async def listing() -> None:
            r = await http.get("/v1/traces", params={"status": "failed"})
            r.raise_for_status()

        async def search() -> None:
            r = await http.get("/v1/traces", params={"q": "webhook 404"})
            r.raise_for_status()

        async def search_none() -> None:  # a word no trace holds
            r = await http.get("/v1/traces", params={"q": "zyzzyva"})
            r.raise_for_status()

        async def search_rare_pair() -> None:  # a common word no trace of a rare status holds
            r = await http.get("/v1/traces", params={"q": "passed", "status": "queued"})
            r.raise_for_status()

        await timed_cpu("rest_list_status_ms", pid, listing, iterations)
        await timed_cpu("rest_search_ms", pid, search, iterations)
        await timed_cpu("rest_search_no_match_ms", pid, search_none, iterations)
        await timed_cpu("rest_search_rare_pair_ms", pid, search_rare_pair, iterations)
    async with Client(f"{base}/mcp") as client:

        async def get_trace() -> None:
            result = await client.call_tool("get_trace", {"trace_id": big_id})
            assert not result.is_error

        await timed_cpu("mcp_get_trace_ms", pid, get_trace, iterations)


async def live_append(bases: list[str], total: int) -> float:
    """Events/s appended in batches of BATCH, through every replica at once (one trace per writer)."""
    per_writer = total // (2 * len(bases))

    async def writer(base: str, name: str) -> None:
        async with httpx2.AsyncClient(base_url=base, timeout=60) as http:
            created = await http.post("/v1/traces", json={"scenario_slug": f"bench-{name}"})
            trace = created.json()["id"]
            ts = 1_763_629_200_000
            for start in range(0, per_writer, BATCH):
                events = [
                    {"seq": i, "ts": ts + i, "kind": "log", "step_id": f"s{i // 500}", "message": f"line {i}"}
                    for i in range(start, start + BATCH)
                ]
                r = await http.post(f"/v1/traces/{trace}/events", json={"events": events})
                assert r.json()["accepted"] == BATCH, r.text

    t = time.perf_counter()
    await asyncio.gather(*(writer(b, f"{i}-{j}") for i, b in enumerate(bases) for j in range(2)))
    return (per_writer * 2 * len(bases)) / (time.perf_counter() - t)


RESULTS: dict[str, dict[str, Any]] = {}
LABEL = ""


@contextmanager
def servers(tmp: Path, engine: dict[str, str], count: int, sqlite_dir: Path) -> Iterator[list[Served]]:
    # The benchmark measures the store, not the per-org rate limits.
    extra: list[str] = ["--rate-limits", "read=10000000,write=10000000,ingest=10000000"]
    if engine:
        extra += ["--database-url", engine["database_url"], "--blob-url", engine["blob_url"]]
    started: list[Served] = []
    try:
        for i in range(count):
            (tmp / f"r{i}").mkdir(exist_ok=True)
            data_dir = sqlite_dir if not engine else tmp / f"r{i}" / "data"
            started.append(start_server(data_dir, *extra, timeout=180))
        yield started
    finally:
        for s in started:
            s.process.terminate()
            s.process.wait(30)


def run_engine(
    label: str, engine: dict[str, str], tmp: Path, args: argparse.Namespace, admin_url: str | None = None
) -> None:
    global LABEL
    LABEL = label
    RESULTS[label] = {"traces": args.traces, "load_before": os.getloadavg()[0]}
    prebuilt = bool(args.database_url if engine else args.sqlite_dir)
    print(f"== {label}: filling {args.traces} traces", file=sys.stderr, flush=True)
    data_dir = (args.sqlite_dir or tmp / "data") if not engine else tmp / "fill"
    big_id = fill(engine, data_dir, args.traces, admin_url, prebuilt, args.ingests)
    replicas = 2 if engine else 1
    with servers(tmp, engine, replicas, data_dir) as served:
        print(f"== {label}: REST and MCP latency", file=sys.stderr, flush=True)
        asyncio.run(rest_and_mcp(served[0].base_url, served[0].process.pid, big_id, args.iterations))
        RESULTS[label]["load_after_latency"] = os.getloadavg()[0]
        if args.no_live:
            return
        print(f"== {label}: live append through {replicas} process(es)", file=sys.stderr, flush=True)
        rates = [asyncio.run(live_append([s.base_url for s in served], args.live_events)) for _ in range(3)]
        RESULTS[label]["live_append_events_per_s"] = {
            "replicas": replicas,
            "min": round(min(rates)),
            "p50": round(statistics.median(rates)),
            "max": round(max(rates)),
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--live-events", type=int, default=40_000)
    parser.add_argument("--ingests", type=int, default=3, help="times the 10,000-event trace is stored")
    parser.add_argument("--json")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one engine")
    parser.add_argument("--no-live", action="store_true", help="skip live append (bench_live.py measures it)")
    parser.add_argument("--sqlite-dir", type=Path, help="a data dir make_store.py built: measured as it is")
    parser.add_argument("--database-url", help="a PostgreSQL database make_store.py filled (the server's role)")
    parser.add_argument("--admin-url", help="the same database as its owner or a superuser")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="molar-bench-pg-")))
        if args.only != "postgres":
            (tmp / "sqlite").mkdir()
            run_engine("sqlite", {}, tmp / "sqlite", args)
        if args.only != "sqlite" and args.database_url:
            s3 = stack.enter_context(s3_endpoint())
            os.environ.update(s3.env())
            s3.create_bucket("molar-bench")
            (tmp / "postgres").mkdir()
            engine = {"database_url": args.database_url, "blob_url": "s3://molar-bench/bench"}
            run_engine("postgres", engine, tmp / "postgres", args, args.admin_url)
        elif args.only != "sqlite":
            # The server as it would be set up for this much data: a real cache, durable writes.
            cluster = stack.enter_context(pg_cluster(PG_SETTINGS))
            s3 = stack.enter_context(s3_endpoint())
            os.environ.update(s3.env())
            s3.create_bucket("molar-bench")
            (tmp / "postgres").mkdir()
            url = cluster.new_database("bench")
            engine = {"database_url": url, "blob_url": "s3://molar-bench/bench"}
            run_engine("postgres", engine, tmp / "postgres", args, cluster.admin_url(url.rsplit("/", 1)[1]))
    text = json.dumps(RESULTS, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
