"""OTLP ingest benchmark (issue 10): protobuf export over HTTP in batches of 512 spans, and span
appended → SSE follower latency.

    .venv/bin/python bench/bench_otlp.py [--spans 40960] [--runs 3] [--latency-samples 200] [--against SRC] [--warm-up]

Runs a real `molar-mcp serve --no-auth` on a free 127.0.0.1 port in a temp data dir and sends it what
the OpenTelemetry SDK sends: `ExportTraceServiceRequest` protobuf bodies of 512 spans (GenAI chat and
tool spans with their attributes), children before their root, one exporter at a time. Bodies are
encoded before the clock starts. Targets: ≥ 20,000 spans/s; span → SSE follower p50 ≤ 50 ms. Each run
is a fresh server; with `--against SRC` each round runs that version first, then this one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
from bench_live import cpu_seconds, pct, start  # same folder: the live bench's server start, percentiles, CPU
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

BATCH = 512
PROTOBUF = {"content-type": "application/x-protobuf"}
START_NS = 1_795_170_900_000_000_000


def _span(message: ExportTraceServiceRequest, trace: bytes, span_id: int, parent: int | None, i: int) -> None:
    if not message.resource_spans:
        rs = message.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", "bench-agent"
        rs.scope_spans.add().scope.name = "bench"
    span: Span = message.resource_spans[0].scope_spans[0].spans.add()
    span.trace_id = trace
    span.span_id = span_id.to_bytes(8, "big")
    if parent is not None:
        span.parent_span_id = parent.to_bytes(8, "big")
    span.start_time_unix_nano = START_NS + i * 1_000_000
    span.end_time_unix_nano = START_NS + i * 1_000_000 + 900_000
    span.kind = Span.SPAN_KIND_CLIENT
    attrs: dict[str, Any]
    if parent is None:
        span.name = "invoke_agent bench"
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench"}
    elif i % 2:
        span.name = "chat gpt-4o-mini"
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 1200 + i % 300,
            "gen_ai.usage.output_tokens": 40 + i % 50,
            "gen_ai.response.finish_reasons": "tool_calls",
        }
    else:
        span.name = "execute_tool search"
        attrs = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search",
            "gen_ai.tool.call.id": f"call_{i}",
            "gen_ai.tool.call.arguments": json.dumps({"q": f"item {i}"}),
            "gen_ai.tool.call.result": json.dumps({"hits": i % 7}),
        }
    for key, value in attrs.items():
        kv = span.attributes.add()
        kv.key = key
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value


def bodies(total: int, per_trace: int, salt: int) -> list[bytes]:
    """Requests of BATCH spans; each trace's root span comes in its last request, after its children."""
    out: list[bytes] = []
    sent = 0
    t = 0
    while sent < total:
        trace = (salt * 1_000_003 + t + 1).to_bytes(16, "big")
        root = (t + 1) << 32
        n = min(per_trace, total - sent)
        ids = list(range(1, n))
        for first in range(0, n, BATCH):
            message = ExportTraceServiceRequest()
            for k in range(first, min(first + BATCH, n)):
                if k == n - 1:
                    _span(message, trace, root, None, 0)
                else:
                    _span(message, trace, root + ids[k], root, k + 1)
            out.append(message.SerializeToString())
        sent += n
        t += 1
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the server and of its worker processes (the OTLP finisher, the analysis worker):
    the server's own, its children's still running (from /proc), and those of children it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK") + cpu_seconds(pid)  # + cutime, cstime
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():  # (a child is listed under the thread that started it)
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    for child in children:
        try:
            total += tree_cpu_seconds(child)
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile (its CPU then counts in cutime at the next reading)
    return total


POLL_SECONDS = 0.05  # how often the bench asks whether every trace has settled


async def bench_ingest(
    base: str, total: int, per_trace: int, salt: int, pid: int | None = None, warm_up: bool = False
) -> dict[str, float]:
    """Answered: the exporter has its answer for every batch (what it waits for). Settled: besides, every
    trace has finished (laid out, detectors run), which the server does after answering. With the
    server's `pid`, its CPU seconds until answered and until settled (less what the bench's own polls
    for "settled" cost it: each poll is timed on an idle server first)."""
    payloads = bodies(total, per_trace, salt)
    running = {"source": "agent", "status": "running"}
    async with httpx2.AsyncClient(base_url=base, timeout=60) as http:
        if warm_up:  # one trace sent and settled before the clock: a server that has been running a while
            for body in bodies(per_trace, per_trace, salt + 1_000):
                assert (await http.post("/otlp/v1/traces", content=body, headers=PROTOBUF)).status_code == 200
            while (await http.get("/v1/traces", params=running)).json()["items"]:  # noqa: ASYNC110 (the server is polled)
                await anyio.sleep(POLL_SECONDS)
        poll_cpu = 0.0
        if pid is not None:  # the server CPU one "settled?" poll costs, so it is not counted as ingest
            cpu = cpu_seconds(pid)
            for _ in range(100):
                await http.get("/v1/traces", params=running)
            poll_cpu = (cpu_seconds(pid) - cpu) / 100
        cpu0 = cpu_seconds(pid) if pid is not None else 0.0
        tree0 = tree_cpu_seconds(pid) if pid is not None else 0.0
        started = time.perf_counter()
        for body in payloads:
            response = await http.post("/otlp/v1/traces", content=body, headers=PROTOBUF)
            assert response.status_code == 200, response.text
            assert response.content == b"", response.content  # no partial_success: every span taken
        answered = time.perf_counter() - started
        cpu_answered = cpu_seconds(pid) - cpu0 if pid is not None else 0.0
        tree_answered = tree_cpu_seconds(pid) - tree0 if pid is not None else 0.0
        polls = 1
        while (await http.get("/v1/traces", params=running)).json()["items"]:
            await anyio.sleep(POLL_SECONDS)
            polls += 1
        settled = time.perf_counter() - started
        cpu_settled = cpu_seconds(pid) - cpu0 - polls * poll_cpu if pid is not None else 0.0
        tree_settled = tree_cpu_seconds(pid) - tree0 - polls * poll_cpu if pid is not None else 0.0
    out = {
        "spans": total,
        "requests": len(payloads),
        "seconds": answered,
        "spans_per_s": total / answered,
        "settled_seconds": settled,
        "settled_spans_per_s": total / settled,
    }
    if pid is not None:
        out |= {
            # The serving process and its worker processes together (what the machine spent)…
            "server_cpu_us_per_span_answered": tree_answered / total * 1e6,
            "server_cpu_us_per_span_settled": tree_settled / total * 1e6,
            "settled_spans_per_cpu_s": total / max(1e-9, tree_settled),
            # … and the serving process alone (what the exports' answers compete with).
            "serving_process_cpu_us_per_span_answered": cpu_answered / total * 1e6,
            "serving_process_cpu_us_per_span_settled": cpu_settled / total * 1e6,
            "polls": polls,
            "poll_cpu_ms": poll_cpu * 1000,
        }
    return out


async def bench_sse_latency(base: str, samples: int) -> dict[str, float]:
    """One span per request into a running trace (its root comes last); time until the SSE reader has
    the span's `step.start` (same process, same clock)."""
    trace = os.urandom(16)
    async with (
        httpx2.AsyncClient(base_url=base, timeout=30) as writer,
        httpx2.AsyncClient(base_url=base, timeout=httpx2.Timeout(30, read=None)) as reader,
    ):
        first = ExportTraceServiceRequest()
        _span(first, trace, 2, 1, 1)
        await writer.post("/otlp/v1/traces", content=first.SerializeToString(), headers=PROTOBUF)
        items = (await writer.get("/v1/traces", params={"source": "agent", "status": "running", "limit": 1})).json()
        trace_id = items["items"][0]["id"]
        sent: dict[str, float] = {}
        latencies: list[float] = []
        done = anyio.Event()

        async def read() -> None:
            async with reader.stream("GET", f"/v1/traces/{trace_id}/stream") as response:
                async for sse in httpx2.EventSource(response):
                    if sse.event != "message":
                        continue
                    event = sse.json()
                    key = event.get("step_id")
                    if event["kind"] == "step.start" and key in sent:
                        latencies.append((time.perf_counter() - sent[key]) * 1000)
                        if len(latencies) == samples:
                            done.set()
                            return

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(0.3)  # let the reader connect before the first span
            for i in range(samples):
                message = ExportTraceServiceRequest()
                span_id = 100 + i
                _span(message, trace, span_id, 1, i + 2)
                sent[f"span-{span_id:016x}"] = time.perf_counter()
                await writer.post("/otlp/v1/traces", content=message.SerializeToString(), headers=PROTOBUF)
                await anyio.sleep(0.005)  # a live run's pace: one span every ~5 ms
            with anyio.fail_after(30):
                await done.wait()
    return {"p50_ms": statistics.median(latencies), "p95_ms": pct(latencies, 0.95), "n": len(latencies)}


def _serve_and_measure(args: argparse.Namespace, salt: int, src: str | None) -> dict[str, Any]:
    """One round on a fresh server (run from `src` when given): an ingest run and the SSE latency."""
    tmp = Path(tempfile.mkdtemp(prefix="molar-bench-otlp-"))
    before = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = src  # the server process imports molar_mcp from there
    try:
        process, base = start(tmp / "data")
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before
    try:
        load = os.getloadavg()[0]
        # What the server spent, whatever else the machine runs: its CPU per span, spans settled per CPU-second.
        run: dict[str, Any] = dict(
            anyio.run(bench_ingest, base, args.spans, args.per_trace, salt, process.pid, args.warm_up)
        )
        run["span_to_sse"] = anyio.run(bench_sse_latency, base, args.latency_samples)
        run["load_average"] = round((load + os.getloadavg()[0]) / 2, 2)
        return run
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float]:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    return {
        "ingest_spans_per_s": spread([r["spans_per_s"] for r in runs]),
        "settled_spans_per_s": spread([r["settled_spans_per_s"] for r in runs]),
        "settled_spans_per_cpu_s": spread([r["settled_spans_per_cpu_s"] for r in runs]),
        "server_cpu_us_per_span_answered": spread([r["server_cpu_us_per_span_answered"] for r in runs]),
        "server_cpu_us_per_span_settled": spread([r["server_cpu_us_per_span_settled"] for r in runs]),
        "serving_process_cpu_us_per_span_settled": spread([r["serving_process_cpu_us_per_span_settled"] for r in runs]),
        "span_to_sse_p50_ms": spread([r["span_to_sse"]["p50_ms"] for r in runs]),
        "load_average": spread([r["load_average"] for r in runs]),
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spans", type=int, default=40_960)
    parser.add_argument("--per-trace", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument(
        "--against",
        metavar="SRC",
        help="the `src` folder of another version (e.g. `git archive <commit> src | tar -x -C /tmp/before`"
        " then /tmp/before/src): each round runs it, then this one, on fresh servers with the same spans,"
        " so before and after are measured in one window (the machine's load moves)",
    )
    parser.add_argument(
        "--warm-up",
        action="store_true",
        help="send one trace and let it settle before the clock starts (a server running a while: worker"
        " processes started, caches filled), so their start-up is not counted per span",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    versions: dict[str, str | None] = (
        {"this": None} if args.against is None else {"against": args.against, "this": None}
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
    for n in range(args.runs):
        for name, src in versions.items():
            runs[name].append(_serve_and_measure(args, n, src))
    result = {name: _summary(items) for name, items in runs.items()}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
