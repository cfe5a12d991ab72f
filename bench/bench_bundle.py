"""Bundle ingest: speed, server memory, and what a huge bundle does to an unrelated reader (issues 13, 16).

    .venv/bin/python bench/bench_bundle.py [--runs 3] [--events 100000] [--flood-events 1000000]
        [--src before=/tmp/molar-before/src] [--sections inprocess,http,flood] [--work DIR] [--json out.json]

Each `--src LABEL=DIR` is a source tree (a `src` folder, e.g. `git archive <commit> src | tar -x -C DIR`)
measured beside this checkout ("this") in the same run, section by section, one variant after the other
in every run, so a before/after ratio sees the same machine load. Per section and variant, min / median /
max over `--runs`, with the 1-minute load average of each run:

- inprocess: `ingest_bundle` of an `--events` bundle (a real long run of the demo shop, tests/long_run.py)
  into a fresh embedded store, in a fresh Python process each run: events/s, events per CPU-second of
  the process, and its peak RSS; then the same two figures with the WAL checkpointed too (a commit leaves
  the checkpoint to a thread of the store, `store/db.py`: here one is run at once after the ingest).
- http: a real `molar-mcp serve --no-auth`; RSS idle, then warm (a small bundle stored and analysed:
  the code of ingest and of the detectors loaded), then three such bundles posted back to back
  (events/s over the three, and per CPU-second of the server while they are posted), the peak RSS
  while they are stored and analysed, and the RSS once every analysis is stored (+3 s).
- flood: one bundle of `--flood-events` tiny events posted while another client reads `GET /v1/traces`
  every 20 ms until the bundle's analysis is stored: that read's p50 / p99 / max while the bundle is
  stored and while it is analysed, each phase's seconds, and the server's peak RSS (VmHWM).

Both server sections also give the server's CPU seconds and, where big traces are analysed in a worker
process (api/analysis_worker.py), that worker's CPU seconds and peak RSS (its VmHWM, sampled every 20 ms).

Bundles are built once and kept in --work (default: a temp dir removed at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx2
from bench_scale import Server, load, pct  # same folder: the server start, load and percentiles

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.long_run, tests.bundles

MAX_MB = "400"  # the flood bundle is far below it packed; its events expand past the default's 8×
_INPROCESS = """
import json, resource, sqlite3, sys, tempfile, time
from pathlib import Path
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import SqliteTraceStore
data = Path(sys.argv[1]).read_bytes()
store = SqliteTraceStore(Path(tempfile.mkdtemp(dir=sys.argv[2])))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def kids():  # the CPU of child processes reaped so far (a bundle's reading child, store/child_reader.py)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
t, cpu, kids_start = time.perf_counter(), time.process_time(), kids()
cpu_start = cpu
ingest_bundle(store, "org_local", data, max_bytes=400 * 1024 * 1024)
took, cpu, child_cpu = time.perf_counter() - t, time.process_time() - cpu, kids() - kids_start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
# The WAL copied into the database file now (what the commit did itself before a thread did it after).
sqlite3.connect(store.data_dir / "molar.sqlite3").execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
whole, whole_cpu = time.perf_counter() - t, time.process_time() - cpu_start
print(json.dumps({"seconds": took, "cpu_seconds": cpu + child_cpu, "peak_mb": peak / 1024, "start_mb": before / 1024,
                  "seconds_checkpointed": whole, "cpu_seconds_checkpointed": whole_cpu + child_cpu,
                  "child_cpu_seconds": child_cpu, "child_peak_mb": child_peak / 1024}))
"""


@contextmanager
def variant(src: Path | None) -> Iterator[None]:
    """Run child processes on source tree `src` (None: this checkout)."""
    old = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = str(src)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


class Figures:
    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = {}
        self.loads: dict[tuple[str, str], list[float]] = {}

    def add(self, label: str, figure: str, value: float) -> None:
        self.values.setdefault((figure, label), []).append(value)
        self.loads.setdefault((figure, label), []).append(load())
        print(f"  {label:8} {figure}: {value:,.1f}  (load {load():.1f})", file=sys.stderr, flush=True)

    def print(self, labels: list[str]) -> None:
        figures = list(dict.fromkeys(f for f, _ in self.values))
        print(f"\n{'figure':58} {'variant':8} {'min':>10} {'median':>10} {'max':>10}   load (min-max)")
        for figure in figures:
            for label in labels:
                vals = self.values.get((figure, label))
                if not vals:
                    continue
                loads = self.loads[(figure, label)]
                print(
                    f"{figure:58} {label:8} {min(vals):>10,.1f} {statistics.median(vals):>10,.1f} {max(vals):>10,.1f}"
                    f"   {min(loads):.1f}-{max(loads):.1f}"
                )
            if len(labels) > 1 and all((figure, label) in self.values for label in labels):
                base = statistics.median(self.values[(figure, labels[-1])])
                ratios = ", ".join(
                    f"{label} {statistics.median(self.values[(figure, label)]) / base:.2f}×" for label in labels[:-1]
                )
                print(f"{'':58} ratio of medians to {labels[-1]}: {ratios}")

    def dump(self) -> dict[str, Any]:
        return {
            f"{figure} [{label}]": {"values": vals, "loads": self.loads[(figure, label)]}
            for (figure, label), vals in self.values.items()
        }


def long_bundle(work: Path, events: int) -> Path:
    path = work / f"long-{events}.tar.gz"
    if not path.exists():
        from tests.long_run import record_long_run

        print(f"recording a {events:,}-event run of the demo shop", file=sys.stderr, flush=True)
        path.write_bytes(record_long_run(events))
    return path


def tiny_bundle(work: Path, events: int) -> Path:
    path = work / f"tiny-{events}.tar.gz"
    if not path.exists():
        from tests.bundles import make_bundle, summary

        rows = [{"seq": n, "ts": 1_763_629_200_000 + n, "kind": "log", "message": "x"} for n in range(events)]
        path.write_bytes(make_bundle(summary(scenario_slug="million"), rows))
    return path


def peak_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM:")


def _status_mb(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:  # gone
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """The server's child processes (its analysis worker, when one runs; a bundle's reading child)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # the server is gone
        return found
    for task in tasks:
        with suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def is_analysis_worker(pid: int) -> bool:
    """Whether a child of the server is its analysis worker (the other children: bundles' reading children,
    forks of the server itself, store/child_reader.py)."""
    try:
        return b"analysis_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def reaped_cpu_s(pid: int) -> float:
    """The CPU time (user + system, in s) of the children a process has reaped so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system), in s; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Workers:
    """Samples the server's children (the analysis worker) every 20 ms: their peak RSS (VmHWM) and CPU."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self.readers: dict[int, float] = {}  # bundles' reading children: their peak RSS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.02)

    def sample(self) -> None:
        for child in children(self.pid):
            if child not in self.peak and child not in self.readers and not is_analysis_worker(child):
                self.readers[child] = 0.0
            if child in self.readers:  # a bundle's reading child: its peak RSS (its CPU: `reaped_cpu_s`)
                self.readers[child] = max(self.readers[child], _status_mb(child, "VmHWM:"))
                continue
            self.peak[child] = max(self.peak.get(child, 0.0), _status_mb(child, "VmHWM:"))
            self.cpu[child] = max(self.cpu.get(child, 0.0), cpu_s(child))

    def rss_mb(self) -> float:
        return sum(_status_mb(child, "VmRSS:") for child in children(self.pid) if child not in self.readers)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def wait_analysed(http: httpx2.Client, trace_ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    for trace_id in trace_ids:
        while http.get(f"/v1/traces/{trace_id}/analysis").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"trace {trace_id} was not analysed in {timeout:.0f} s")
            time.sleep(0.1)


def _small_bundle() -> bytes:
    from tests.bundles import make_bundle

    return make_bundle()


def bench_inprocess(figures: Figures, label: str, bundle: Path, events: int, work: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _INPROCESS, str(bundle), str(work)], check=True, capture_output=True, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    figures.add(label, f"in process: {events:,}-event bundle, events/s", events / result["seconds"])
    if "cpu_seconds" in result:
        figures.add(label, "in process: events per CPU-second", events / result["cpu_seconds"])
    if "seconds_checkpointed" in result:  # until the WAL is checkpointed too (by the commit or after it)
        figures.add(label, "in process: events/s, WAL checkpointed", events / result["seconds_checkpointed"])
        figures.add(label, "in process: per CPU-second, WAL checkpointed", events / result["cpu_seconds_checkpointed"])
    figures.add(label, "in process: peak RSS MB (process)", result["peak_mb"])
    if result.get("child_cpu_seconds"):  # the bundle read by a child process (counted in the CPU above)
        figures.add(label, "in process: reading child CPU s", result["child_cpu_seconds"])
        figures.add(label, "in process: reading child peak RSS MB", result["child_peak_mb"])


def bench_http(figures: Figures, label: str, bundle: Path, events: int, work: Path) -> None:
    data = bundle.read_bytes()
    d = Path(tempfile.mkdtemp(dir=work, prefix="http-"))
    server = Server.molar(d, "--max-bundle-mb", MAX_MB)
    try:
        with httpx2.Client(base_url=server.base, timeout=600, trust_env=False) as http:
            http.get("/v1/traces").raise_for_status()
            time.sleep(1)
            idle = server.rss_mb()
            # Warm: a small bundle stored and analysed first (the code of ingest and the detectors loaded).
            small = http.post("/v1/traces/ingest", files={"bundle": ("s.tar.gz", _small_bundle())})
            small.raise_for_status()
            wait_analysed(http, [small.json()["trace_id"]])
            time.sleep(1)
            warm = server.rss_mb()
            peak = warm
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, server.rss_mb())
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            workers = Workers(server.proc.pid)
            cpu_before = server.cpu_ms() / 1000 + reaped_cpu_s(server.proc.pid)
            ids = []
            t, cpu, reaped = time.perf_counter(), server.cpu_ms(), reaped_cpu_s(server.proc.pid)
            for n in range(3):
                answer = http.post(
                    "/v1/traces/ingest", files={"bundle": ("b.tar.gz", data)}, data={"scenario_slug": f"big-{n}"}
                )
                answer.raise_for_status()
                ids.append(answer.json()["trace_id"])
            took, cpu = time.perf_counter() - t, server.cpu_ms() - cpu
            reading = reaped_cpu_s(server.proc.pid) - reaped  # bundles' reading children, reaped once read
            wait_analysed(http, ids)
            server_cpu = server.cpu_ms() / 1000 + reaped_cpu_s(server.proc.pid) - cpu_before
            time.sleep(3)
            stop.set()
            sampler.join()
            after = server.rss_mb()
            workers_after = workers.rss_mb()
            workers.stop()
        figures.add(label, "HTTP: 3 bundles back to back, events/s", 3 * events / took)
        # The server's CPU while the three are posted (what of their analyses runs meanwhile included), and
        # its bundles' reading children's (store/child_reader.py).
        figures.add(label, "HTTP: events per server CPU-second (while posted)", 3 * events / (cpu / 1000 + reading))
        if reading:
            figures.add(label, "HTTP: reading children's CPU s per bundle", reading / 3)
            figures.add(label, "HTTP: reading child peak RSS (VmHWM) MB", max(workers.readers.values(), default=0.0))
        figures.add(label, f"HTTP: server CPU s per {events:,}-event bundle (stored + analysed)", server_cpu / 3)
        figures.add(label, "HTTP: analysis worker CPU s per bundle", sum(workers.cpu.values()) / 3)
        figures.add(label, "HTTP: server RSS idle MB", idle)
        figures.add(label, "HTTP: server RSS warm (one small bundle stored) MB", warm)
        figures.add(label, "HTTP: server RSS peak MB", peak)
        figures.add(label, "HTTP: server RSS after (analysed +3 s) MB", after)
        figures.add(label, "HTTP: analysis worker peak RSS (VmHWM) MB", max(workers.peak.values(), default=0.0))
        figures.add(label, "HTTP: analysis worker RSS after (until it idles out) MB", workers_after)
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


async def _flood(base: str, data: bytes) -> tuple[list[float], list[float], float, float]:
    """The reader's latencies while the bundle is stored and while it is analysed; both phases' seconds."""
    storing: list[float] = []
    analysing: list[float] = []
    phase = storing
    done = asyncio.Event()
    async with httpx2.AsyncClient(base_url=base, timeout=600.0, trust_env=False) as http:

        async def ingest() -> tuple[float, float]:
            nonlocal phase
            started = time.perf_counter()
            answer = await http.post(
                "/v1/traces/ingest", files={"bundle": ("m.tar.gz", data)}, data={"scenario_slug": "million"}
            )
            answer.raise_for_status()
            stored = time.perf_counter()
            phase = analysing
            trace_id = answer.json()["trace_id"]
            for _ in range(3000):  # the analysis, stored in the background (10 minutes at most)
                if (await http.get(f"/v1/traces/{trace_id}/analysis")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            done.set()
            return stored - started, time.perf_counter() - stored

        async def reader() -> None:
            async with httpx2.AsyncClient(base_url=base, timeout=120.0, trust_env=False) as own:
                while not done.is_set():
                    into = phase
                    started = time.perf_counter()
                    response = await own.get("/v1/traces", params={"limit": 20})
                    into.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                    await asyncio.sleep(0.02)

        (took, analysed), _ = await asyncio.gather(ingest(), reader())
    return storing, analysing, took, analysed


def bench_flood(figures: Figures, label: str, bundle: Path, events: int, work: Path) -> None:
    d = Path(tempfile.mkdtemp(dir=work, prefix="flood-"))
    server = Server.molar(d, "--max-bundle-mb", MAX_MB)
    try:
        workers = Workers(server.proc.pid)
        cpu_before = server.cpu_ms() / 1000
        storing, analysing, took, analysed = asyncio.run(_flood(server.base, bundle.read_bytes()))
        server_cpu = server.cpu_ms() / 1000 - cpu_before
        workers.stop()
        figures.add(label, f"flood: {events:,}-event bundle stored, s", took)
        figures.add(label, "flood: then analysed, s", analysed)
        figures.add(label, "flood: server CPU s (stored + analysed + reads)", server_cpu)
        figures.add(label, "flood: analysis worker CPU s", sum(workers.cpu.values()))
        figures.add(label, "flood: analysis worker peak RSS (VmHWM) MB", max(workers.peak.values(), default=0.0))
        for name, latencies in (("while stored", storing), ("while analysed", analysing)):
            if latencies:
                figures.add(label, f"flood: GET /v1/traces {name}: p50 ms", statistics.median(latencies))
                figures.add(label, f"flood: GET /v1/traces {name}: p99 ms", pct(latencies, 0.99))
                figures.add(label, f"flood: GET /v1/traces {name}: max ms", max(latencies))
        figures.add(label, "flood: server peak RSS (VmHWM) MB", peak_mb(server.proc.pid))
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--flood-events", type=int, default=1_000_000)
    parser.add_argument("--src", action="append", default=[], help="LABEL=DIR: another source tree to measure")
    parser.add_argument("--sections", default="inprocess,http,flood")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants: list[tuple[str, Path | None]] = [
        (label, Path(path).resolve()) for label, _, path in (s.partition("=") for s in args.src)
    ]
    variants.append(("this", None))
    work = args.work or Path(tempfile.mkdtemp(prefix="molar-bench-bundle-"))
    work.mkdir(parents=True, exist_ok=True)
    sections = set(args.sections.split(","))
    figures = Figures()
    try:
        print(f"load average at start: {load():.1f}", file=sys.stderr)
        if sections & {"inprocess", "http"}:
            long = long_bundle(work, args.events)
            print(f"{args.events:,}-event bundle: {long.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
        if "flood" in sections:
            tiny = tiny_bundle(work, args.flood_events)
            print(f"{args.flood_events:,}-event bundle: {tiny.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
        for run in range(args.runs):
            print(f"run {run + 1} of {args.runs}", file=sys.stderr, flush=True)
            for label, src in variants:
                with variant(src):
                    if "inprocess" in sections:
                        bench_inprocess(figures, label, long, args.events, work)
                    if "http" in sections:
                        bench_http(figures, label, long, args.events, work)
                    if "flood" in sections:
                        bench_flood(figures, label, tiny, args.flood_events, work)
        figures.print([label for label, _ in variants])
        if args.json:
            args.json.write_text(json.dumps(figures.dump(), indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
