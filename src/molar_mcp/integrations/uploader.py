"""Uploads to a Molar server beside a test run, never holding it up for long.

Work goes to a few daemon threads; each HTTP request is bounded in time and retried with exponential
backoff (network errors, 408/425/429/5xx; `Retry-After` honoured). After a few failures in a row to
reach the server at all, later requests are not attempted, so a Molar that is down costs a bounded
time however many tests there are. `flush` waits for what is under way at most its bound; daemon
threads still running then do not keep the process alive. Nothing here raises into the caller:
every call answers an `Answer`.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
FileParts = list[tuple[str, tuple[str, bytes, str]]]


@dataclass
class Answer:
    ok: bool
    status: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False


@dataclass
class Limits:
    timeout_s: float = 15.0  # one HTTP request
    retries: int = 3  # after the first attempt
    backoff_s: float = 0.5
    max_consecutive_failures: int = 3
    workers: int = 2


def _retry_after(response: httpx2.Response) -> float | None:
    """`Retry-After` in seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Uploader:
    """A bounded, retrying HTTP client to one Molar server, with background workers."""

    def __init__(self, base_url: str, api_key: str | None, limits: Limits | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.limits = limits or Limits()
        headers = {"user-agent": "molar-mcp-pytest"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._http = httpx2.Client(base_url=self.base_url, headers=headers, timeout=self.limits.timeout_s)
        self._lock = threading.Lock()
        self._failures = 0
        self.last_error: str | None = None
        self.refused: str | None = None  # 401/403: every later call would be refused too
        self._stop = threading.Event()
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []

    @property
    def unreachable(self) -> bool:
        return self._failures >= self.limits.max_consecutive_failures

    # -- requests --------------------------------------------------------------------------------

    def post_json(self, path: str, body: dict[str, Any]) -> Answer:
        return self._request(path, lambda: {"json": body})

    def post_form(
        self, path: str, data: dict[str, str], files: FileParts, idempotency_key: str | None = None
    ) -> Answer:
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        return self._request(path, lambda: {"data": data, "files": files, "headers": headers})

    def _request(self, path: str, make: Callable[[], dict[str, Any]]) -> Answer:
        if self.refused is not None:
            return Answer(ok=False, error=self.refused, skipped=True)
        if self.unreachable:
            return Answer(ok=False, error=self.last_error, skipped=True)
        last = Answer(ok=False, error="not attempted")
        for attempt in range(self.limits.retries + 1):
            if self._stop.is_set():
                return Answer(ok=False, error="gave up: the test session ended")
            wait: float | None = None
            try:
                response = self._http.post(path, **make())
            except httpx2.TransportError as exc:
                reason = (
                    f"no answer in {self.limits.timeout_s:g} s"
                    if isinstance(exc, httpx2.TimeoutException)
                    else str(exc) or type(exc).__name__
                )
                with self._lock:
                    self._failures += 1
                    self.last_error = reason
                last = Answer(ok=False, error=reason)
                if self.unreachable:
                    return last
            else:
                with self._lock:
                    self._failures = 0
                body = _json_object(response)
                if response.is_success:
                    return Answer(ok=True, status=response.status_code, body=body)
                message = str(
                    body.get("message")
                    or body.get("error_description")
                    or body.get("error")
                    or response.text[:200]
                    or response.reason_phrase
                )
                last = Answer(
                    ok=False, status=response.status_code, body=body, error=f"HTTP {response.status_code}: {message}"
                )
                if response.status_code in (401, 403):
                    self.refused = (
                        f"Molar refused the API key ({last.error}); "
                        "set MOLAR_API_KEY to a key with the mcp:trace:write scope"
                    )
                    return last
                if response.status_code not in RETRY_STATUS:
                    return last
                wait = _retry_after(response)
            if attempt < self.limits.retries:
                backoff = self.limits.backoff_s * 2**attempt
                delay = wait if wait is not None else backoff + random.uniform(0, backoff / 4)
                self._stop.wait(min(delay, 10.0))
        return last

    # -- background work -------------------------------------------------------------------------

    def submit(self, task: Callable[[], None]) -> None:
        """Run `task` on a worker thread (started on first use)."""
        with self._lock:
            self._pending += 1
            if len(self._threads) < self.limits.workers:
                thread = threading.Thread(target=self._work, name="molar-upload", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._tasks.put(task)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                task()
            except Exception:  # noqa: S110 - a task must never take the worker down; tasks record their own failures
                pass
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def flush(self, timeout_s: float) -> int:
        """Wait until every submitted task is done, at most `timeout_s`; answer how many are left.
        Tasks still queued then are dropped and requests in flight give up at their next retry."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            remaining = self._pending
        if remaining:
            self._stop.set()
        return remaining

    def close(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join(timeout=0.5)  # idle workers exit at once; a stuck request is left behind
        if not any(thread.is_alive() for thread in self._threads):
            self._http.close()


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
