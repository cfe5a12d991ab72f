"""Request metrics and per-org rate limits: state the /v1 app carries."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """The API's metrics, in a registry of its own (no process-wide singletons)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "molar_http_requests", "HTTP requests served", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "molar_http_request_duration_seconds",
            "Time to the response's first byte",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.ingested_traces = Counter(
            "molar_ingested_traces", "Traces stored (bundles and live)", ["mode"], registry=self.registry
        )
        self.ingested_events = Counter(
            "molar_ingested_events", "Events stored (bundles and live)", ["mode"], registry=self.registry
        )
        self.rate_limited = Counter(
            "molar_rate_limited_requests", "Requests refused with 429", ["limit_class"], registry=self.registry
        )
        self.mcp_relayed = Counter(
            "molar_mcp_relayed_requests",
            "Requests to /mcp naming another worker's 2025-11-25 session, relayed to it (serve --workers)",
            ["method"],
            registry=self.registry,
        )
        self.mcp_answers = Counter(
            "molar_mcp_posts",
            "POSTs to /mcp by the answer mode of the MCP SDK session manager that took them: json or sse",
            ["mode"],
            registry=self.registry,
        )
        # The labelled series of `requests` and `latency` by (method, route, status), kept: `labels()` takes
        # a lock and makes a tuple of strings each time (~7 µs), on every request, in-process reads included.
        self._served: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def served(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request to `route` (a template) answered with `status`, its first byte after `seconds`."""
        series = self._served.get((method, route, status))
        if series is None:
            series = (self.latency.labels(method, route), self.requests.labels(method, route, str(status)))
            self._served[(method, route, status)] = series
        series[0].observe(seconds)
        series[1].inc()


# The ASGI scope extension of the server's own in-process calls to /v1 (the MCP server's tools acting for
# their caller, a debugger chat's tools). The caller's request was counted where it came in (a tool call,
# a chat message), so these are not counted again.
IN_PROCESS_EXTENSION = "molar.in_process"


@dataclass(frozen=True)
class RateLimits:
    """Requests per minute per org and class. `tool` counts MCP tool calls (one a call, whatever the
    tool reads inside); `read`/`write`/`ingest` count REST requests. A bucket holds a minute's worth, so
    a burst up to the limit passes at once."""

    read: int = 600
    write: int = 120
    # Reporting: the Playwright reporter and the pytest plugin upload one bundle per test attempt as the
    # run goes on (a 500-test run is 500 uploads in minutes), and a live reporter creates, appends to and
    # finishes its traces: one class, so a run's reporting never spends the budget of edits and shares.
    ingest: int = 1200
    otlp: int = 6000  # OTLP exports (api/otlp.py): an agent's SDK sends a batch every few seconds
    tool: int = 6000  # a team of agents: 10 looping agents of one org stay far below 100 calls a second each


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Token buckets per (org, class): `limit` requests a minute, refilled continuously."""

    limits: RateLimits = field(default_factory=RateLimits)
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take_now(self, org_id: str, limit_class: str) -> float | None:
        """`take` when it can answer at once (in memory); None when it must ask a shared store (then call
        `take` off the event loop)."""
        return self.take(org_id, limit_class)

    async def spend(self, org_id: str, limit_class: str) -> float:
        """`take` from async code: in memory when it can, else in a worker thread."""
        wait = self.take_now(org_id, limit_class)
        if wait is None:
            wait = await anyio.to_thread.run_sync(self.take, org_id, limit_class)
        return wait

    def take(self, org_id: str, limit_class: str) -> float:
        """Spend one request; return 0 when allowed, else the seconds until one is."""
        limit: int = getattr(self.limits, limit_class)
        rate = limit / 60.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get((org_id, limit_class))
            if bucket is None:
                bucket = self._buckets[(org_id, limit_class)] = _Bucket(float(limit), now)
            bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / rate


def in_process(scope: Mapping[str, Any]) -> bool:
    """True for the server's own in-process calls (see IN_PROCESS_EXTENSION)."""
    extensions = scope.get("extensions") or {}
    return IN_PROCESS_EXTENSION in extensions


# What a reporter sends as a run goes on: uploads, and a live trace's create, appends and finish (a live
# reporter sends a batch every few hundred milliseconds; at the `write` limit its appends were refused).
_LIVE_REPORTING = re.compile(r"^/v1/traces(?:/ingest|/[^/]+/(?:events|finish))?$")


def limit_class(method: str, path: str) -> str | None:
    """Which limit a request counts against; None for what is never limited (health, signed downloads)."""
    if path.startswith("/otlp/"):
        return "otlp"
    if not path.startswith("/v1/") or path.startswith("/v1/signed/"):
        return None
    if method == "POST" and _LIVE_REPORTING.match(path):
        return "ingest"
    if method in ("GET", "HEAD"):
        return "read"
    return "write"
