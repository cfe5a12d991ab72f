"""Foundation benchmark: ingest rate, store reads and MCP-over-HTTP tool latency, against the issue's targets.

    /work/venv/bin/python bench/bench_foundation.py [--traces 10000] [--events 10000]
        [--iterations 200] [--json out.json]

Everything happens in a fresh temporary data dir that is removed at the end. The MCP figures come from
the real `molar-mcp serve --no-auth` process on a free 127.0.0.1 port, driven by the MCP SDK's `Client`
over streamable HTTP in both protocol eras. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.long_run

from tests.long_run import record_long_run

from molar_mcp import __version__
from molar_mcp.demo.recorded import shipped_runs
from molar_mcp.ingest import ingest_bundle, read_bundle
from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, NewTrace, SqliteTraceStore, TraceQuery

ORG = LOCAL_ORG_ID
INGEST_RUNS = 5
WARMUP = 10
BIG_STEP = 25  # the step of the 10k-event trace whose events are read (it has 50)
EVENTS_PAGE = 40  # get_trace's page size (mcp/tools/get_trace.py PAGE_LIMIT)
FAILING_PAGE = 12  # get_trace's failed-events read (NOTABLE_LIMIT)
SEARCH = "webhook 404"
MCP_BIN = Path(sys.executable).with_name("molar-mcp")

# ---- figures -------------------------------------------------------------------------------------


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    target: str | None = None  # e.g. ">= 50000" or "<= 10"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        op, limit = self.target.split()
        ok = self.value >= float(limit) if op == ">=" else self.value <= float(limit)
        return "PASS" if ok else "MISS"


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, name: str, value: float, unit: str, target: str | None = None, note: str = "") -> None:
        self.figures.append(Figure(section, name, value, unit, target, note))
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
        print(f"  {name}: {shown} {unit}{'  ' + note if note else ''}", file=sys.stderr, flush=True)

    def latency(self, section: str, name: str, samples_ms: list[float], p50_target: float | None = None) -> None:
        p50, p95 = percentile(samples_ms, 50), percentile(samples_ms, 95)
        self.add(section, f"{name} p50", p50, "ms", f"<= {p50_target:g}" if p50_target is not None else None)
        self.add(section, f"{name} p95", p95, "ms")


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (p50 of an even count is the lower middle, never an interpolation)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def sample_sync(fn: Callable[[], object], iterations: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def sample_async(fn: Callable[[], Awaitable[object]], iterations: int) -> list[float]:
    for _ in range(WARMUP):
        await fn()
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


# ---- 1. ingest -----------------------------------------------------------------------------------


def bench_ingest(report: Report, work: Path, n_events: int) -> bytes:
    print(f"ingest: building a {n_events:,}-event bundle", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    bundle = record_long_run(n_events)
    report.details["bundle_build_s"] = round(time.perf_counter() - t0, 3)
    report.add("ingest", "bundle size", len(bundle), "bytes", note="tar.gz, the scenario file as its blob")

    parse_s = []
    for _ in range(INGEST_RUNS):
        t0 = time.perf_counter()
        parsed = read_bundle(bundle)
        parse_s.append(time.perf_counter() - t0)

    def fresh_store(label: str, i: int) -> SqliteTraceStore:
        return SqliteTraceStore(work / f"{label}-{i}")

    ingest_s, store_s = [], []
    for i in range(INGEST_RUNS):
        store = fresh_store("ingest", i)
        try:
            t0 = time.perf_counter()
            ingest_bundle(store, ORG, bundle)
            ingest_s.append(time.perf_counter() - t0)
        finally:
            store.close()
    for i in range(INGEST_RUNS):
        store = fresh_store("store", i)
        try:
            t0 = time.perf_counter()
            store.add_trace(ORG, parsed.trace, parsed.blobs)
            store_s.append(time.perf_counter() - t0)
        finally:
            store.close()
    for i in range(INGEST_RUNS):
        shutil.rmtree(work / f"ingest-{i}", ignore_errors=True)
        shutil.rmtree(work / f"store-{i}", ignore_errors=True)

    med = statistics.median
    report.add(
        "ingest",
        "ingest_bundle (parse+validate+store)",
        n_events / med(ingest_s),
        "events/s",
        ">= 50000",
        f"median of {INGEST_RUNS}, {med(ingest_s) * 1000:.0f} ms/bundle, empty store",
    )
    report.add(
        "ingest",
        "read_bundle only (parse+validate)",
        n_events / med(parse_s),
        "events/s",
        note=f"{med(parse_s) * 1000:.0f} ms/bundle",
    )
    report.add(
        "ingest",
        "add_trace only (store)",
        n_events / med(store_s),
        "events/s",
        note=f"{med(store_s) * 1000:.0f} ms/bundle, empty store",
    )
    report.details["ingest_runs_ms"] = [round(s * 1000, 1) for s in ingest_s]
    report.details["parse_runs_ms"] = [round(s * 1000, 1) for s in parse_s]
    report.details["add_trace_runs_ms"] = [round(s * 1000, 1) for s in store_s]
    return bundle


# ---- 2. fill -------------------------------------------------------------------------------------

_AREAS = ("checkout", "cart", "login", "billing", "search", "profile", "orders", "catalog")
_FLOWS = ("basic", "coupon", "sso", "upgrade", "guest")
_STATUSES = (("passed", 60), ("failed", 30), ("error", 5), ("aborted", 3), ("running", 1), ("queued", 1))
_SOURCES = (("pr", 50), ("schedule", 30), ("manual", 15), ("shadow_diff", 5))
_SIGNATURES = (
    ("step-4: assertion .order-total", 35, "expected text $71.20 at .order-total; got $106.80"),
    ("webhook-404", 25, "POST /api/webhooks/stripe returned 404: webhook route not found"),
    ("login-sso: timeout /callback", 20, "Timeout 30000 ms exceeded waiting for /auth/callback"),
    ("cart: 500 /api/cart", 12, "GET /api/cart returned 500 Internal Server Error"),
    ("search: selector [data-test=result]", 8, "locator [data-test=result] resolved to 0 elements"),
)
_PATHS = ("/api/products?page={n}", "/api/cart", "/api/inventory/sku-{n}", "/api/session", "/api/orders/{n}")
FILL_END = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)  # the 10k-event bundle starts at 06:00 that day


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def synthetic_trace(rng: random.Random) -> NewTrace:
    """One realistic small trace: 20-40 events over 3-6 steps; failed ones end in a failed assertion."""
    status = _pick(rng, _STATUSES)
    source = _pick(rng, _SOURCES)
    slug = f"{rng.choice(_AREAS)}-{rng.choice(_FLOWS)}"
    signature = message = None
    if status == "failed":
        i = rng.choices(range(len(_SIGNATURES)), weights=[s[1] for s in _SIGNATURES])[0]
        signature, _, message = _SIGNATURES[i]
    target = rng.randint(20, 40)
    created = FILL_END - timedelta(seconds=rng.randint(0, 30 * 86400))
    ts = int(created.timestamp() * 1000)
    events: list[Event] = []

    def emit(kind: str, step_id: str | None, msg: str | None, ok: bool | None = None, **payload: Any) -> None:
        nonlocal ts
        ts += rng.randint(1, 200)
        events.append(Event(seq=len(events), ts=ts, kind=kind, step_id=step_id, ok=ok, message=msg, payload=payload))

    emit("log", None, f"Running 1 test using 1 worker · {slug}.spec.ts")
    step = 0
    while len(events) < target - 4:
        step += 1
        sid = f"step-{step}"
        title = f"{slug.replace('-', ' ')} step {step}" + (" (stripe webhook)" if "billing" in slug else "")
        emit("step.start", sid, title, title=title)
        for _ in range(rng.randint(1, 3)):
            n = rng.randrange(1, 500)
            path = rng.choice(_PATHS).format(n=n)
            emit("action", sid, f"click [data-test=item-{n}]", action="click", selector=f"[data-test=item-{n}]")
            emit("network.request", sid, f"GET {path}", method="GET", url=f"http://localhost:3000{path}")
            emit(
                "network.response",
                sid,
                f"200 GET {path}",
                method="GET",
                url=f"http://localhost:3000{path}",
                status=200,
                body={"id": n},
            )
        emit("assertion", sid, "expected [data-test=cart] to be visible", ok=True, matcher="toBeVisible")
        emit("step.end", sid, f"{title}: passed", ok=True)
    if signature is not None:
        step += 1
        sid = f"step-{step}"
        emit("step.start", sid, "the failing step", title="the failing step")
        emit("assertion", sid, message, ok=False, matcher="toHaveText", expected="$71.20", actual="$106.80")
        emit("error", sid, f"Error: {message}", stack="at spec.ts:42:7")
        emit("step.end", sid, "the failing step: failed", ok=False)
    emit("log", None, f"1 {status}")
    return NewTrace(
        scenario_slug=slug,
        scenario_title=slug.replace("-", " ").capitalize(),
        status=status,
        source=source,
        code_sha=f"{rng.getrandbits(160):040x}",
        pr_number=rng.randint(1, 4000) if source == "pr" else None,
        failure_signature=signature,
        created_at=created,
        events=events,
    )


def bench_fill(report: Report, store: SqliteTraceStore, n_traces: int) -> None:
    print(f"fill: {n_traces:,} traces", file=sys.stderr, flush=True)
    rng = random.Random(20261120)
    build_s = store_s = 0.0
    n_events = 0
    statuses: dict[str, int] = {}
    for _ in range(n_traces):
        t0 = time.perf_counter()
        trace = synthetic_trace(rng)
        t1 = time.perf_counter()
        store.add_trace(ORG, trace, {})
        t2 = time.perf_counter()
        build_s += t1 - t0
        store_s += t2 - t1
        n_events += len(trace.events)
        statuses[trace.status] = statuses.get(trace.status, 0) + 1
    report.add(
        "fill",
        "fill time",
        build_s + store_s,
        "s",
        note=f"{n_traces:,} traces, {n_events:,} events; {build_s:.1f}s building Events, {store_s:.1f}s add_trace",
    )
    report.add(
        "fill",
        "add_trace on small traces",
        n_traces / store_s,
        "traces/s",
        note=f"{n_events / store_s:,.0f} events/s",
    )
    report.details["fill"] = {"traces": n_traces, "events": n_events, "statuses": statuses}


# ---- 3. store reads ------------------------------------------------------------------------------


def bench_store(report: Report, store: SqliteTraceStore, big_id: str, iterations: int) -> None:
    print("store reads", file=sys.stderr, flush=True)
    failed = TraceQuery(status="failed", limit=50)
    first = store.list_traces(ORG, failed)
    if first.next_cursor is None or len(first.items) != 50:
        raise RuntimeError("fewer than 51 failed traces: raise --traces")
    page2 = TraceQuery(status="failed", limit=50, cursor=first.next_cursor)
    search = TraceQuery(q=SEARCH, limit=50)
    report.details["search_hits_page1"] = len(store.list_traces(ORG, search).items)
    s = "store"
    report.latency(
        s,
        "list_traces(status=failed, limit 50)",
        sample_sync(lambda: store.list_traces(ORG, failed), iterations),
        10,
    )
    report.latency(
        s,
        f"list_traces(q={SEARCH!r}, limit 50)",
        sample_sync(lambda: store.list_traces(ORG, search), iterations),
    )
    report.latency(
        s, "list_traces(status=failed) page 2", sample_sync(lambda: store.list_traces(ORG, page2), iterations)
    )
    report.latency(s, "get_trace(10k-event trace)", sample_sync(lambda: store.get_trace(ORG, big_id), iterations))
    report.latency(
        s,
        f"list_events(step={BIG_STEP}, limit {EVENTS_PAGE})",
        sample_sync(lambda: store.list_events(ORG, big_id, step=str(BIG_STEP), limit=EVENTS_PAGE), iterations),
    )
    report.latency(
        s,
        f"list_events(ok=false, limit {FAILING_PAGE})",
        sample_sync(lambda: store.list_events(ORG, big_id, ok=False, limit=FAILING_PAGE), iterations),
    )


# ---- 4. MCP over HTTP ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was healthy")
        try:
            with opener.open(f"{base}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server was not healthy within {timeout:.0f}s")


def result_tokens(result: Any) -> dict[str, int]:
    """Tokens of a tool result: its text blocks, its other blocks (resource links) as JSON, and
    structuredContent as JSON. `total` is the larger of text and structured (a client shows a model one
    of them; what mcp/render.py `cost` budgets); `links` is what a client that also shows the links pays
    on top."""
    text = "\n".join(block.text for block in result.content if block.type == "text")
    links = "\n".join(
        block.model_dump_json(by_alias=True, exclude_none=True) for block in result.content if block.type != "text"
    )
    structured = result.structured_content
    sc = json.dumps(structured, ensure_ascii=False) if structured is not None else ""
    sc_no_nulls = json.dumps(_drop_nulls(structured), ensure_ascii=False) if structured is not None else ""
    counts = {
        "text": estimate_tokens(text),
        "links": estimate_tokens(links),
        "structured": estimate_tokens(sc),
    }
    counts["total"] = max(counts["text"], counts["structured"])
    counts["structured_without_nulls"] = estimate_tokens(sc_no_nulls)
    return counts


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


async def bench_mcp(report: Report, base: str, big_id: str, demo_ids: dict[str, str], iterations: int) -> None:
    from mcp.client import Client

    url = f"{base}/mcp"
    tokens: dict[str, dict[str, int]] = {}
    for mode in ("auto", "legacy"):
        async with Client(url, mode=mode) as client:
            era = f"{mode}, {client.protocol_version}"
            print(f"MCP over HTTP ({era})", file=sys.stderr, flush=True)
            report.details[f"protocol_{mode}"] = client.protocol_version

            async def call(name: str, args: dict[str, Any], client: Any = client) -> Any:
                result = await client.call_tool(name, args)
                if result.is_error:
                    raise RuntimeError(f"{name}({args}) failed: {result.content}")
                return result

            calls = {
                "list_traces(status=failed)": ("list_traces", {"status": "failed"}),
                "get_trace(10k trace)": ("get_trace", {"trace_id": big_id}),
                f"get_trace(10k trace, step={BIG_STEP})": (
                    "get_trace",
                    {"trace_id": big_id, "step": BIG_STEP},
                ),
            }
            floor = await sample_async(lambda client=client: client.list_tools(cache_mode="bypass"), iterations)
            report.latency(f"mcp-http {mode}", f"tools/list, the round-trip floor [{mode}]", floor)
            for label, (name, args) in calls.items():
                samples = await sample_async(lambda n=name, a=args: call(n, a), iterations)
                target = 30 if label == "get_trace(10k trace)" else None
                report.latency(f"mcp-http {mode}", f"{label} [{mode}]", samples, target)
            if mode == "auto":
                for label, (name, args) in calls.items():
                    tokens[label] = result_tokens(await call(name, args))
                for demo, sid in demo_ids.items():
                    tokens[f"get_trace(demo {demo})"] = result_tokens(await call("get_trace", {"trace_id": sid}))
    report.details["tokens"] = tokens
    for label in (
        "get_trace(10k trace)",
        f"get_trace(10k trace, step={BIG_STEP})",
        "list_traces(status=failed)",
    ):
        t = tokens[label]
        report.add(
            "tokens",
            f"{label} output",
            t["total"],
            "tokens",
            "<= 2000",
            f"text {t['text']} + structured {t['structured']}; +{t['links']} in resource links",
        )
    demo_labels = [k for k in tokens if k.startswith("get_trace(demo")]
    if demo_labels:
        worst = max(demo_labels, key=lambda k: tokens[k]["total"])
        t = tokens[worst]
        report.add(
            "tokens",
            "get_trace(demo trace) output, max",
            t["total"],
            "tokens",
            "<= 2000",
            f"{worst}: text {t['text']} + structured {t['structured']}; +{t['links']} in resource links",
        )


async def bench_rest(report: Report, base: str, big_id: str, iterations: int) -> None:
    """The /v1 calls get_trace makes, over the same HTTP server: splits MCP cost from store+API cost."""
    import httpx2

    async with httpx2.AsyncClient(base_url=base, trust_env=False, timeout=30) as http:

        async def get(path: str, params: dict[str, str] | None = None) -> None:
            resp = await http.get(path, params=params)
            resp.raise_for_status()

        report.latency(
            "rest-http",
            "GET /v1/traces/{id} (10k trace)",
            await sample_async(lambda: get(f"/v1/traces/{big_id}"), iterations),
        )
        report.latency(
            "rest-http",
            "GET /v1/traces/{id}/events?ok=false",
            await sample_async(lambda: get(f"/v1/traces/{big_id}/events", {"ok": "false", "limit": "12"}), iterations),
        )


def run_server_phase(
    report: Report, data_dir: Path, work: Path, big_id: str, demo_ids: dict[str, str], iterations: int
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = work / "server.log"
    entry = [str(MCP_BIN)] if MCP_BIN.exists() else [sys.executable, "-m", "molar_mcp.cli"]
    cmd = [
        *entry,
        "serve",
        "--no-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        # Thousands of calls a minute by design: lift the per-org rate limits (seed 000 defaults).
        "--rate-limits",
        "read=1000000,write=1000000,ingest=1000000",
    ]
    print(f"server: {' '.join(cmd)}", file=sys.stderr, flush=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            report.details["server_start_s"] = round(wait_healthy(base, proc), 2)
            asyncio.run(_http_benches(report, base, big_id, demo_ids, iterations))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            report.details["server_exit_code"] = proc.returncode
    lines = log_path.read_text(errors="replace").splitlines()
    odd = [ln for ln in lines if any(w in ln for w in ("WARNING", "ERROR", "Traceback", "Exception"))]
    report.details["server_log_lines"] = len(lines)
    report.details["server_internal_http_log_lines"] = sum(
        "HTTP Request: GET http://molar.embedded" in ln for ln in lines
    )
    report.details["server_shutdown_clean"] = any("Application shutdown complete" in ln for ln in lines)
    report.details["server_log_odd"] = odd[:20]
    statuses: dict[str, int] = {}
    for ln in lines:
        if '" ' in ln and "HTTP/1.1" in ln:
            code = ln.rsplit('" ', 1)[1].split(" ", 1)[0]
            statuses[code] = statuses.get(code, 0) + 1
    report.details["server_http_statuses"] = statuses


async def _http_benches(report: Report, base: str, big_id: str, demo_ids: dict[str, str], iterations: int) -> None:
    await bench_mcp(report, base, big_id, demo_ids, iterations)
    await bench_rest(report, base, big_id, iterations)


# ---- main ----------------------------------------------------------------------------------------


def print_table(report: Report) -> None:
    rows = [("section", "figure", "value", "unit", "target", "")]
    for f in report.figures:
        value = f"{f.value:,.0f}" if abs(f.value) >= 100 else f"{f.value:.2f}"
        rows.append((f.section, f.name, value, f.unit, f.target or "", f.verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for i, row in enumerate(rows):
        print(
            "  ".join(
                c.rjust(w) if j == 2 else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=10_000, help="small traces to fill the store with")
    parser.add_argument("--events", type=int, default=10_000, help="events of the one big trace")
    parser.add_argument("--iterations", type=int, default=200, help="timed calls per latency figure")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.traces < 100 or args.events < 200 or args.iterations < 1:
        parser.error("need --traces >= 100, --events >= 200, --iterations >= 1")
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

    started = time.perf_counter()
    load_before = os.getloadavg()
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="molar-bench-"))
    try:
        bundle = bench_ingest(report, work, args.events)
        data_dir = work / "data"
        store = SqliteTraceStore(data_dir)
        try:
            bench_fill(report, store, args.traces)
            demo_ids = {}
            for name, data in shipped_runs():
                demo_ids[name.split(".")[0]] = ingest_bundle(store, ORG, data)[1]
            t0 = time.perf_counter()
            big_id = ingest_bundle(store, ORG, bundle)[1]
            report.add(
                "ingest",
                "ingest_bundle into the filled store",
                args.events / (time.perf_counter() - t0),
                "events/s",
                note="1 run",
            )
            bench_store(report, store, big_id, args.iterations)
        finally:
            store.close()
        run_server_phase(report, data_dir, work, big_id, demo_ids, args.iterations)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    report.details["elapsed_s"] = round(elapsed, 1)
    load = f"load avg {load_before[0]:.1f} → {os.getloadavg()[0]:.1f}"
    report.details["load_avg_1m"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]

    print()
    print(
        f"molar-mcp {__version__} · Python {platform.python_version()} · {os.cpu_count()} CPUs · "
        f"{args.traces:,} traces + one {args.events:,}-event trace · {args.iterations} iterations · "
        f"{elapsed:.0f}s · {load}"
    )
    print_table(report)
    misses = [f for f in report.figures if f.verdict == "MISS"]
    print(f"\n{len(misses)} of {sum(1 for f in report.figures if f.target)} targets missed.")
    if report.details.get("server_log_odd"):
        print("server log warnings/errors:", *report.details["server_log_odd"], sep="\n  ")
    if args.json:
        doc = {
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "molar_mcp": __version__,
            },
            "params": {"traces": args.traces, "events": args.events, "iterations": args.iterations},
            "figures": [{**asdict(f), "verdict": f.verdict} for f in report.figures],
            "details": report.details,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
