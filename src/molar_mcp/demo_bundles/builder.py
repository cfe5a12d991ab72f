"""Deterministic builder of trace bundles (docs/bundle-format.md): record events, pack, check.

`TraceRecorder` records the events of one run the way a browser test runner or an agent harness
would (steps, actions, network, console, assertions, LLM and tool calls) with a fake clock, and
collects the run's artifacts as `Blob`s. `build_bundle` packs a summary, the events and the blobs
into a tar.gz whose bytes depend only on the input (fixed mtimes, sorted members, gzip mtime 0).
`check_bundle` reads a bundle back and verifies it. `build_big_bundle` makes one synthetic bundle
of any size, for benchmarks.

Only the standard library and pydantic; nothing here does I/O except `write_bundle`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import struct
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from molar_mcp.models.traces import TRACE_SOURCES, TRACE_STATUSES, ArtifactRef, Event

__all__ = [
    "APP_ORIGIN",
    "BUNDLE_FORMAT",
    "Blob",
    "BundleContents",
    "BundleError",
    "TraceRecorder",
    "build_big_bundle",
    "build_bundle",
    "check_bundle",
    "epoch_ms",
    "har_blob",
    "iso_utc",
    "page_screenshot",
    "playwright_trace_blob",
    "png_bytes",
    "stable_uuid",
    "write_bundle",
]

BUNDLE_FORMAT: Final = "molar-bundle/1"
APP_ORIGIN: Final = "http://localhost:3000"
ID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://molar.it/demo-bundles")

JsonDict = dict[str, Any]
Rgb = tuple[int, int, int]

_STATUS_TEXT: Final[dict[int, str]] = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


# --------------------------------------------------------------------------------------------
# small helpers


def epoch_ms(iso: str) -> int:
    """`2026-11-20T09:00:00Z` → epoch milliseconds."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def iso_utc(ms: int) -> str:
    """Epoch milliseconds → `2026-11-20T09:00:00Z` (with `.123` when there are milliseconds)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_uuid(*parts: str) -> str:
    """A UUID that depends only on `parts` (uuid5 in the demo-bundles namespace)."""
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(parts)))


def _compact(**fields: Any) -> JsonDict:
    """The fields that are not None, in the order given."""
    return {key: value for key, value in fields.items() if value is not None}


def _json_bytes(value: Any, *, indent: int | None = None) -> bytes:
    separators = None if indent is not None else (",", ":")
    text = json.dumps(value, indent=indent, separators=separators, ensure_ascii=False)
    return (text + "\n").encode() if indent is not None else text.encode()


@dataclass(frozen=True)
class Blob:
    """An artifact of a run: stored as `blobs/<sha256>` and listed in `summary.artifacts`."""

    kind: str
    name: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    def ref(self) -> ArtifactRef:
        return ArtifactRef(
            kind=self.kind,
            sha256=self.sha256,
            name=self.name,
            content_type=self.content_type,
            size=self.size,
        )


# --------------------------------------------------------------------------------------------
# images


def png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """A valid 8-bit RGB PNG of `rgb` (`width * height * 3` bytes, row by row)."""
    if len(rgb) != width * height * 3:
        raise ValueError(f"expected {width * height * 3} bytes of pixels, got {len(rgb)}")
    stride = width * 3
    raw = b"".join(b"\x00" + rgb[row * stride : (row + 1) * stride] for row in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


_BANNERS: Final[dict[str, tuple[Rgb, Rgb]]] = {
    "ok": ((220, 252, 231), (22, 163, 74)),
    "error": ((254, 226, 226), (220, 38, 38)),
    "warning": ((254, 243, 199), (217, 119, 6)),
    "info": ((219, 234, 254), (37, 99, 235)),
}
_ACCENTS: Final[tuple[Rgb, ...]] = (
    (79, 70, 229),
    (13, 148, 136),
    (190, 24, 93),
    (202, 138, 4),
    (8, 145, 178),
    (124, 58, 237),
)


def page_screenshot(variant: str, *, banner: str | None = None, cards: int | None = None) -> bytes:
    """A small PNG that looks like a wireframe of a shop page (navbar, optional banner, cards).

    `variant` varies the accent colour and layout; `banner` is one of ok, error, warning, info.
    """
    width, height = 320, 200
    rng = random.Random(variant)
    accent = _ACCENTS[rng.randrange(len(_ACCENTS))]
    pixels = bytearray(bytes((246, 247, 249)) * (width * height))

    def fill(x: int, y: int, w: int, h: int, color: Rgb) -> None:
        row = bytes(color) * w
        for line in range(y, min(y + h, height)):
            start = (line * width + x) * 3
            pixels[start : start + len(row)] = row

    fill(0, 0, width, 24, (17, 24, 39))
    fill(8, 6, 12, 12, accent)
    for i in range(3):
        fill(200 + i * 38, 10, 28, 4, (156, 163, 175))
    top = 32
    if banner is not None:
        background, stripe = _BANNERS[banner]
        fill(12, top, width - 24, 18, background)
        fill(12, top, 4, 18, stripe)
        fill(24, top + 7, 120, 4, stripe)
        top += 26
    count = cards if cards is not None else rng.randint(2, 3)
    card_w = (width - 24 - (count - 1) * 8) // count
    for i in range(count):
        x = 12 + i * (card_w + 8)
        fill(x, top, card_w, 96, (229, 231, 235))
        fill(x + 1, top + 1, card_w - 2, 94, (255, 255, 255))
        shade = tuple(min(255, c + 110 + rng.randrange(30)) for c in accent)
        fill(x + 6, top + 6, card_w - 12, 44, (shade[0], shade[1], shade[2]))
        fill(x + 6, top + 58, card_w - 30, 5, (55, 65, 81))
        fill(x + 6, top + 70, card_w - 50, 4, (156, 163, 175))
        fill(x + 6, top + 82, 30, 6, accent)
    fill(width - 100, height - 34, 88, 22, accent)
    fill(width - 80, height - 25, 48, 4, (255, 255, 255))
    return png_bytes(width, height, bytes(pixels))


# --------------------------------------------------------------------------------------------
# the recorder


@dataclass
class _OpenStep:
    step_id: str
    title: str
    started: int
    failed: bool = False


@dataclass
class TraceRecorder:
    """Records one run's events with a fake clock that starts at `start_ms`.

    Every method appends events (seq 0, 1, 2, … in order) and moves the clock forward; the first
    event is at `start_ms` exactly. Steps get the ids step-1, step-2, …. Browser
    requests that end in a status ≥ 400 also log the console error a browser would show.
    """

    name: str
    start_ms: int
    origin: str = APP_ORIGIN
    events: list[Event] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    now: int = field(init=False)
    _rng: random.Random = field(init=False, repr=False)
    _step: _OpenStep | None = field(default=None, init=False, repr=False)
    _steps: int = field(default=0, init=False, repr=False)
    _requests: int = field(default=0, init=False, repr=False)
    _tool_calls: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.now = self.start_ms
        self._rng = random.Random(self.name)

    # -- clock and ids -----------------------------------------------------------------------

    def jitter(self, around: int, spread: float = 0.25) -> int:
        """A deterministic duration near `around` ms."""
        low = max(1, int(around * (1 - spread)))
        return self._rng.randint(low, max(low, int(around * (1 + spread))))

    def advance(self, ms: int) -> None:
        self.now += ms

    def uid(self, label: str) -> str:
        return stable_uuid(self.name, label)

    def url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else self.origin + path_or_url

    @property
    def step_id(self) -> str | None:
        return self._step.step_id if self._step else None

    @property
    def step_count(self) -> int:
        return self._steps

    @property
    def duration_ms(self) -> int:
        return (self.events[-1].ts - self.events[0].ts) if self.events else 0

    # -- the one way events are made -----------------------------------------------------------

    def emit(
        self,
        kind: str,
        *,
        message: str | None = None,
        ok: bool | None = None,
        payload: Mapping[str, Any] | None = None,
        after_ms: int = 0,
    ) -> Event:
        if self.events:  # the first event is at start_ms
            self.now += after_ms
        event = Event(
            seq=len(self.events),
            ts=self.now,
            kind=kind,
            step_id=self.step_id,
            ok=ok,
            message=message,
            payload=dict(payload or {}),
        )
        self.events.append(event)
        if ok is False and self._step is not None and kind in ("assertion", "error", "tool.result"):
            self._step.failed = True
        return event

    # -- steps ---------------------------------------------------------------------------------

    @contextmanager
    def step(self, title: str, *, ok: bool | None = None) -> Iterator[str]:
        """`with rec.step("Apply the coupon"):` — step.start … step.end.

        The step passes unless a failed assertion, an error or a failed tool result was
        recorded inside it (or `ok` says otherwise).
        """
        if self._step is not None:
            raise RuntimeError(f"step {self._step.title!r} is still open")
        self._steps += 1
        step_id = f"step-{self._steps}"
        self._step = _OpenStep(step_id=step_id, title=title, started=self.now)
        self._step.started = self.emit("step.start", message=title, payload={"title": title}, after_ms=2).ts
        try:
            yield step_id
        finally:
            current = self._step
            passed = (not current.failed) if ok is None else ok
            self.now += 3
            duration = self.now - current.started
            outcome = "passed" if passed else "failed"
            self.emit(
                "step.end",
                ok=passed,
                message=f"{title}: {outcome} in {duration} ms",
                payload={"duration_ms": duration},
            )
            self._step = None

    # -- browser-ish events --------------------------------------------------------------------

    def log(self, text: str, *, level: str = "info", after_ms: int = 1) -> Event:
        return self.emit("log", message=text, payload={"level": level, "text": text}, after_ms=after_ms)

    def console(self, level: str, text: str, *, after_ms: int = 3) -> Event:
        return self.emit("console", message=text, payload={"level": level, "text": text}, after_ms=after_ms)

    def action(
        self,
        action: str,
        *,
        selector: str | None = None,
        value: str | None = None,
        url: str | None = None,
        message: str | None = None,
        after_ms: int | None = None,
    ) -> Event:
        if message is None:
            target = selector or url or ""
            message = f"{action} {target}" + (f" = {value!r}" if value is not None else "")
        payload = _compact(action=action, selector=selector, value=value, url=url)
        delay = after_ms if after_ms is not None else self.jitter(140)
        return self.emit("action", message=message.strip(), payload=payload, after_ms=delay)

    def click(self, selector: str, **kwargs: Any) -> Event:
        return self.action("click", selector=selector, **kwargs)

    def fill(self, selector: str, value: str, **kwargs: Any) -> Event:
        return self.action("fill", selector=selector, value=value, **kwargs)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        status: int,
        duration_ms: int | None = None,
        body: Any = None,
        response_body: Any = None,
        resource_type: str = "fetch",
        response_headers: Mapping[str, str] | None = None,
        browser: bool = True,
        after_ms: int | None = None,
    ) -> str:
        """A network.request / network.response pair; returns the request id."""
        self._requests += 1
        request_id = self.uid(f"request-{self._requests}")
        url = self.url(path_or_url)
        path = url.removeprefix(self.origin) or "/"
        document = resource_type == "document"
        req_headers: dict[str, str] = {
            "accept": "text/html,application/xhtml+xml" if document else "application/json",
            "x-request-id": request_id,
        }
        if body is not None:
            req_headers["content-type"] = "application/json"
        request = _compact(
            request_id=request_id,
            method=method,
            url=url,
            resource_type=resource_type,
            headers=req_headers,
            body=body,
        )
        delay = after_ms if after_ms is not None else self.jitter(12)
        self.emit("network.request", message=f"{method} {path}", payload=request, after_ms=delay)
        took = duration_ms if duration_ms is not None else self.jitter(90 if not document else 220)
        if response_headers is not None:
            resp_headers = dict(response_headers)
        elif status == 204:
            resp_headers = {}
        else:
            kind = "text/html" if document else "application/json"
            resp_headers = {"content-type": f"{kind}; charset=utf-8"}
        response = _compact(
            request_id=request_id,
            method=method,
            url=url,
            status=status,
            duration_ms=took,
            headers=resp_headers,
            body=response_body,
        )
        self.emit(
            "network.response",
            message=f"{method} {path} → {status} ({took} ms)",
            payload=response,
            after_ms=took,
        )
        if browser and status >= 400:
            text = _STATUS_TEXT.get(status, "")
            self.console(
                "error",
                f"Failed to load resource: the server responded with a status of {status} ({text})",
                after_ms=1,
            )
        return request_id

    def navigated(self, path_or_url: str, *, status: int | None = 200, after_ms: int = 20) -> Event:
        url = self.url(path_or_url)
        return self.emit(
            "navigation",
            message=f"navigated to {url}",
            payload=_compact(url=url, status=status),
            after_ms=after_ms,
        )

    def goto(self, path: str, *, status: int = 200, via: str = "goto") -> None:
        """A page load: the goto action (unless `via` is empty), the document request, navigation."""
        url = self.url(path)
        if via == "goto":
            self.action("goto", url=url, message=f"page.goto('{path}')")
        self.request("GET", path, status=status, resource_type="document")
        self.navigated(path, status=status, after_ms=self.jitter(30))

    def expect(
        self,
        matcher: str,
        expected: Any,
        actual: Any,
        *,
        selector: str | None = None,
        message: str | None = None,
        after_ms: int | None = None,
    ) -> bool:
        """An assertion event; ok when `expected == actual`. Returns ok."""
        ok = bool(expected == actual)
        if message is None:
            target = f"locator('{selector}')" if selector else "page"
            argument = "" if expected is True else json.dumps(expected, ensure_ascii=False)
            message = f"expect({target}).{matcher}({argument})" if ok else f"expected {expected}; got {actual}"
        payload = _compact(expected=expected, actual=actual, selector=selector, matcher=matcher)
        delay = after_ms if after_ms is not None else self.jitter(25)
        self.emit("assertion", ok=ok, message=message, payload=payload, after_ms=delay)
        return ok

    def error(self, name: str, message: str, *, stack: str | None = None, after_ms: int = 2) -> Event:
        first_line = message.splitlines()[0] if message else ""
        return self.emit(
            "error",
            ok=False,
            message=f"{name}: {first_line}",
            payload=_compact(name=name, message=message, stack=stack),
            after_ms=after_ms,
        )

    def retry(self, attempt: int, reason: str, *, after_ms: int = 5) -> Event:
        return self.emit(
            "retry",
            message=f"retry #{attempt}: {reason}",
            payload={"attempt": attempt, "reason": reason},
            after_ms=after_ms,
        )

    def attach(self, blob: Blob) -> Blob:
        """Add an artifact (once per content)."""
        if all(existing.sha256 != blob.sha256 for existing in self.blobs):
            self.blobs.append(blob)
        return blob

    def screenshot(self, name: str, data: bytes, *, after_ms: int | None = None) -> Blob:
        blob = self.attach(Blob(kind="screenshot", name=name, content_type="image/png", data=data))
        self.emit(
            "screenshot",
            message=f"screenshot {name}",
            payload={"sha256": blob.sha256, "name": name, "content_type": "image/png"},
            after_ms=after_ms if after_ms is not None else self.jitter(60),
        )
        return blob

    # -- agent-ish events ----------------------------------------------------------------------

    def llm_request(self, model: str, *, messages: int, tools: Sequence[str] = (), after_ms: int = 4) -> Event:
        payload = _compact(model=model, messages=messages, tools=list(tools) or None, max_tokens=1024)
        return self.emit("llm.request", message=f"{model}: {messages} messages", payload=payload, after_ms=after_ms)

    def llm_response(
        self,
        model: str,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        stop_reason: str | None = None,
        text: str | None = None,
        tool_calls: Sequence[Mapping[str, Any]] = (),
        error: Mapping[str, Any] | None = None,
        duration_ms: int | None = None,
    ) -> Event:
        took = duration_ms if duration_ms is not None else self.jitter(1800)
        usage = (
            {"input_tokens": input_tokens, "output_tokens": output_tokens}
            if input_tokens is not None and output_tokens is not None
            else None
        )
        payload = _compact(
            model=model,
            usage=usage,
            stop_reason=stop_reason,
            text=text,
            tool_calls=[dict(call) for call in tool_calls] or None,
            error=dict(error) if error is not None else None,
            duration_ms=took,
        )
        if error is not None:
            message = f"{model}: {error.get('status')} {error.get('type')}"
        elif tool_calls:
            message = f"{model}: tool_use " + ", ".join(str(call["tool"]) for call in tool_calls)
        else:
            message = f"{model}: {stop_reason or 'end_turn'}"
        return self.emit("llm.response", ok=error is None, message=message, payload=payload, after_ms=took)

    def tool_call(self, tool: str, arguments: Mapping[str, Any], *, after_ms: int = 3) -> str:
        self._tool_calls += 1
        call_id = "toolu_" + self.uid(f"tool-call-{self._tool_calls}").replace("-", "")[:20]
        args = json.dumps(dict(arguments), separators=(", ", ": "))
        self.emit(
            "tool.call",
            message=f"{tool}({args})",
            payload={"tool": tool, "call_id": call_id, "arguments": dict(arguments)},
            after_ms=after_ms,
        )
        return call_id

    def tool_result(
        self,
        tool: str,
        call_id: str,
        *,
        result: Any = None,
        error: Mapping[str, Any] | None = None,
        after_ms: int = 4,
    ) -> Event:
        ok = error is None
        message = f"{tool} → ok"
        if error is not None:
            message = f"{tool} → {error.get('type')}: {error.get('message')}"
        payload = _compact(tool=tool, call_id=call_id, result=result, error=dict(error) if error is not None else None)
        return self.emit("tool.result", ok=ok, message=message, payload=payload, after_ms=after_ms)

    # -- packing -------------------------------------------------------------------------------

    def bundle(self, **summary: Any) -> bytes:
        """`build_bundle` of this run; `summary` holds the summary fields (scenario_slug, …)."""
        if self._step is not None:
            raise RuntimeError(f"step {self._step.title!r} is still open")
        return build_bundle(summary, self.events, self.blobs)


# --------------------------------------------------------------------------------------------
# artifacts derived from the recorded events


def har_blob(events: Sequence[Event], *, name: str = "network.har") -> Blob:
    """A HAR 1.2 log of the network.request / network.response pairs among `events`."""
    requests: dict[str, Event] = {}
    entries: list[JsonDict] = []
    for event in events:
        request_id = event.payload.get("request_id")
        if event.kind == "network.request" and isinstance(request_id, str):
            requests[request_id] = event
        elif event.kind == "network.response" and isinstance(request_id, str) and request_id in requests:
            sent = requests.pop(request_id)
            status = int(event.payload["status"])
            took = int(event.payload.get("duration_ms", event.ts - sent.ts))
            req_body = sent.payload.get("body")
            resp_body = event.payload.get("body")
            resp_headers: dict[str, str] = event.payload.get("headers", {})
            req_headers: dict[str, str] = sent.payload.get("headers", {})
            text = json.dumps(resp_body) if resp_body is not None else ""
            entry: JsonDict = {
                "startedDateTime": iso_utc(sent.ts),
                "time": took,
                "request": {
                    "method": sent.payload["method"],
                    "url": sent.payload["url"],
                    "httpVersion": "HTTP/1.1",
                    "headers": [{"name": k, "value": v} for k, v in req_headers.items()],
                    "queryString": [],
                    "cookies": [],
                    "headersSize": -1,
                    "bodySize": len(json.dumps(req_body)) if req_body is not None else 0,
                },
                "response": {
                    "status": status,
                    "statusText": _STATUS_TEXT.get(status, ""),
                    "httpVersion": "HTTP/1.1",
                    "headers": [{"name": k, "value": v} for k, v in resp_headers.items()],
                    "cookies": [],
                    "content": _compact(
                        size=len(text),
                        mimeType=resp_headers.get("content-type", "application/octet-stream"),
                        text=text or None,
                    ),
                    "redirectURL": "",
                    "headersSize": -1,
                    "bodySize": len(text),
                },
                "cache": {},
                "timings": {"send": 1, "wait": max(0, took - 2), "receive": 1},
            }
            if req_body is not None:
                entry["request"]["postData"] = {"mimeType": "application/json", "text": json.dumps(req_body)}
            entries.append(entry)
    har = {
        "log": {
            "version": "1.2",
            "creator": {"name": "Playwright", "version": "1.49.1"},
            "browser": {"name": "chromium", "version": "131.0.6778.33"},
            "entries": entries,
        }
    }
    return Blob(kind="har", name=name, content_type="application/json", data=_json_bytes(har, indent=1))


def _zip_bytes(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, files[path], compresslevel=9)
    return buffer.getvalue()


def playwright_trace_blob(events: Sequence[Event], *, name: str = "trace.zip") -> Blob:
    """A small stand-in for a Playwright trace: a valid zip of NDJSON derived from `events`."""
    start = events[0].ts if events else 0
    lines: list[JsonDict] = [
        {
            "version": 7,
            "type": "context-options",
            "origin": "testRunner",
            "browserName": "chromium",
            "platform": "linux",
            "wallTime": start,
            "monotonicTime": 0,
            "sdkLanguage": "javascript",
            "options": {"baseURL": APP_ORIGIN, "viewport": {"width": 1280, "height": 720}},
        }
    ]
    network: list[JsonDict] = []
    for event in events:
        if event.kind == "action":
            call_id = f"call@{event.seq}"
            method = str(event.payload.get("action"))
            params = {k: v for k, v in event.payload.items() if k != "action"}
            lines.append(
                {
                    "type": "before",
                    "callId": call_id,
                    "startTime": event.ts - start,
                    "apiName": f"page.{method}",
                    "class": "Frame",
                    "method": method,
                    "params": params,
                    "stepId": event.step_id,
                }
            )
            lines.append({"type": "after", "callId": call_id, "endTime": event.ts - start + 1})
        elif event.kind == "network.response":
            network.append(
                {
                    "type": "resource-snapshot",
                    "snapshot": {
                        "request": {"method": event.payload["method"], "url": event.payload["url"]},
                        "response": {"status": event.payload["status"]},
                        "time": event.payload.get("duration_ms", 0),
                    },
                }
            )
    data = _zip_bytes(
        {
            "trace.trace": b"\n".join(_json_bytes(line) for line in lines) + b"\n",
            "trace.network": b"\n".join(_json_bytes(line) for line in network) + b"\n",
        }
    )
    return Blob(kind="playwright", name=name, content_type="application/zip", data=data)


# --------------------------------------------------------------------------------------------
# packing and checking


class BundleError(ValueError):
    """A bundle that does not follow docs/bundle-format.md (or the builder's stricter rules)."""


def _validated_events(events: Iterable[Event | Mapping[str, Any]]) -> list[Event]:
    checked: list[Event] = []
    for index, item in enumerate(events):
        raw = item.model_dump() if isinstance(item, Event) else dict(item)
        try:
            event = Event.model_validate(raw)
        except ValidationError as exc:
            raise BundleError(f"event {index} is not an Event: {exc}") from exc
        if event.step is not None:
            raise BundleError(f"event {index}: `step` is derived by the store; leave it unset")
        if checked and event.seq <= checked[-1].seq:
            raise BundleError(f"event {index}: seq {event.seq} does not increase")
        checked.append(event)
    return checked


def _summary_json(summary: Mapping[str, Any], events: Sequence[Event], blobs: Sequence[Blob]) -> JsonDict:
    fields = {key: value for key, value in summary.items() if value is not None}
    for required in ("scenario_slug", "status"):
        if required not in fields:
            raise BundleError(f"summary lacks {required}")
    if fields["status"] not in TRACE_STATUSES:
        raise BundleError(f"summary status {fields['status']!r} is not one of {TRACE_STATUSES}")
    if "source" in fields and fields["source"] not in TRACE_SOURCES:
        raise BundleError(f"summary source {fields['source']!r} is not one of {TRACE_SOURCES}")
    out: JsonDict = {"format": BUNDLE_FORMAT}
    out.update(fields)
    if events:
        out.setdefault("created_at", iso_utc(events[0].ts))
        out.setdefault("duration_ms", events[-1].ts - events[0].ts)
    if blobs and "artifacts" not in out:
        out["artifacts"] = [blob.ref().model_dump() for blob in blobs]
    return out


def _tar_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    archive.addfile(info, io.BytesIO(data))


def build_bundle(
    summary: Mapping[str, Any],
    events: Iterable[Event | Mapping[str, Any]],
    blobs: Iterable[Blob] = (),
) -> bytes:
    """Pack one run into the bytes of a tar.gz bundle; the same input gives the same bytes.

    `summary` holds the summary.json fields (at least scenario_slug and status); `format` is
    added, `created_at` and `duration_ms` default to the events' first ts and span, and
    `artifacts` defaults to every blob. Every event is validated as `Event`; `step` must be
    unset and `seq` strictly increasing. Screenshot events and artifacts must name a blob.
    """
    checked = _validated_events(events)
    unique: dict[str, Blob] = {}
    for blob in blobs:
        unique.setdefault(blob.sha256, blob)
    summary_json = _summary_json(summary, checked, list(unique.values()))
    for artifact in summary_json.get("artifacts", []):
        if ArtifactRef.model_validate(artifact).sha256 not in unique:
            raise BundleError(f"artifact {artifact.get('name')!r} names a blob the bundle lacks")
    for event in checked:
        sha = event.payload.get("sha256") if event.kind == "screenshot" else None
        if event.kind == "screenshot" and sha not in unique:
            raise BundleError(f"screenshot event {event.seq} names a blob the bundle lacks")

    members: dict[str, bytes] = {
        "summary.json": _json_bytes(summary_json, indent=2),
        "events.ndjson": b"".join(event.model_dump_json(exclude_none=True).encode() + b"\n" for event in checked),
    }
    for sha, blob in unique.items():
        members[f"blobs/{sha}"] = blob.data

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in sorted(members):
            _tar_member(archive, name, members[name])
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def write_bundle(path: str | Path, data: bytes) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


@dataclass(frozen=True)
class BundleContents:
    members: tuple[str, ...]
    summary: JsonDict
    events: tuple[Event, ...]
    blobs: Mapping[str, bytes]


def check_bundle(data: bytes) -> BundleContents:
    """Read a tar.gz bundle at the archive root and check it strictly; raise BundleError if not.

    Checks: only summary.json, events.ndjson and blobs/<sha> regular files; every line an
    Event with `step` unset and seq 0, 1, 2, …; every blob hashing to its name; every artifact
    (right size) and every screenshot naming a blob; the summary's format, status and source.
    """
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for info in archive.getmembers():
                if not info.isreg():
                    raise BundleError(f"{info.name}: not a regular file")
                handle = archive.extractfile(info)
                if handle is None:
                    raise BundleError(f"{info.name}: unreadable")
                files[info.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"not a readable tar.gz: {exc}") from exc
    members = tuple(files)
    if "summary.json" not in files or "events.ndjson" not in files:
        raise BundleError("summary.json or events.ndjson is missing")
    blobs: dict[str, bytes] = {}
    for name, content in files.items():
        if name in ("summary.json", "events.ndjson"):
            continue
        sha = name.removeprefix("blobs/")
        if not name.startswith("blobs/") or len(sha) != 64:
            raise BundleError(f"unexpected member {name}")
        if hashlib.sha256(content).hexdigest() != sha:
            raise BundleError(f"{name}: content does not hash to its name")
        blobs[sha] = content
    summary = json.loads(files["summary.json"])
    if summary.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"summary format is {summary.get('format')!r}")
    _summary_json(summary, [], [])
    events: list[Event] = []
    for number, line in enumerate(files["events.ndjson"].decode().splitlines(), start=1):
        try:
            event = Event.model_validate_json(line)
        except ValidationError as exc:
            raise BundleError(f"events.ndjson line {number}: {exc}") from exc
        if event.step is not None:
            raise BundleError(f"events.ndjson line {number}: step is set")
        if event.seq != len(events):
            raise BundleError(f"events.ndjson line {number}: seq {event.seq}, expected {len(events)}")
        if event.kind == "screenshot" and event.payload.get("sha256") not in blobs:
            raise BundleError(f"events.ndjson line {number}: screenshot of a missing blob")
        events.append(event)
    for artifact in summary.get("artifacts", []):
        ref = ArtifactRef.model_validate(artifact)
        if ref.sha256 not in blobs:
            raise BundleError(f"artifact {ref.name!r}: blob {ref.sha256} is missing")
        if ref.size != len(blobs[ref.sha256]):
            raise BundleError(f"artifact {ref.name!r}: size {ref.size} != {len(blobs[ref.sha256])}")
    return BundleContents(members=members, summary=summary, events=tuple(events), blobs=blobs)


# --------------------------------------------------------------------------------------------
# one big synthetic bundle, for benchmarks

_BIG_PATHS: Final = (
    "/api/products?page={n}",
    "/api/products/sku-{n}",
    "/api/cart",
    "/api/recommendations?sku=sku-{n}",
    "/api/inventory/sku-{n}",
)
_BIG_CONSOLE: Final = (
    ("info", "[analytics] page_view sent ({n})"),
    ("log", "[cart] state hydrated, {n} items"),
    ("warning", "[perf] long task: {n} ms"),
    ("info", "[hmr] connected"),
)


def build_big_bundle(
    n_events: int = 10_000,
    *,
    steps: int = 50,
    start: str = "2026-11-20T06:00:00Z",
    name: str = "synthetic-big",
) -> bytes:
    """One synthetic failed run of exactly `n_events` events over `steps` steps.

    Steps are filled evenly with actions, network pairs, console lines, logs and passing
    assertions; the last step ends in a failed assertion, a runner error and a screenshot.
    The signature is `step-<steps>: assertion .order-total`. Deterministic for a given input.
    """
    if steps < 1:
        raise ValueError("steps must be ≥ 1")
    fixed = 2 + 2 * steps + 3  # first/last log, step.start/end pairs, the failure's 3 events
    if n_events < fixed:
        raise ValueError(f"n_events must be ≥ {fixed} for {steps} steps")
    rec = TraceRecorder(name=name, start_ms=epoch_ms(start))
    rng = random.Random(f"{name}/{n_events}/{steps}")
    filler = n_events - fixed
    rec.log(f"Running 1 test using 1 worker · [chromium] › synthetic.spec.ts › {name}")
    for index in range(steps):
        budget = filler // steps + (1 if index < filler % steps else 0)
        last = index == steps - 1
        with rec.step(f"Synthetic step {index + 1}"):
            while budget > 0:
                pick = rng.randrange(10)
                n = rng.randrange(1, 500)
                if pick < 4 and budget >= 2:
                    path = _BIG_PATHS[rng.randrange(len(_BIG_PATHS))].format(n=n)
                    status = 200 if rng.random() > 0.02 else 503
                    rec.request(
                        "GET",
                        path,
                        status=status,
                        response_body={"id": n, "ok": status == 200},
                        browser=False,
                    )
                    budget -= 2
                elif pick < 6:
                    rec.click(f"[data-test=item-{n}]")
                    budget -= 1
                elif pick < 8:
                    level, text = _BIG_CONSOLE[rng.randrange(len(_BIG_CONSOLE))]
                    rec.console(level, text.format(n=n))
                    budget -= 1
                elif pick < 9:
                    rec.expect("toBeVisible", True, True, selector=f"[data-test=item-{n}]")
                    budget -= 1
                else:
                    rec.log(f"step {index + 1}: heartbeat {n}", level="debug")
                    budget -= 1
            if last:
                rec.expect(
                    "toHaveText",
                    "$71.20",
                    "$106.80",
                    selector=".order-total",
                    message="expected text $71.20 at .order-total; got $106.80",
                )
                rec.error(
                    "Error",
                    "expect(locator('.order-total')).toHaveText(expected) failed\n"
                    'Expected: "$71.20"\nReceived: "$106.80"',
                    stack="Error: expect failed\n    at synthetic.spec.ts:120:7",
                )
                rec.screenshot("failure.png", page_screenshot(name, banner="error"))
    rec.log("1 failed · [chromium] › synthetic.spec.ts", level="error")
    if len(rec.events) != n_events:
        raise RuntimeError(f"built {len(rec.events)} events, wanted {n_events}")
    return rec.bundle(
        scenario_slug=name,
        scenario_title=f"Synthetic run with {n_events} events",
        status="failed",
        source="manual",
        code_sha="0000000",
        failure_signature=f"step-{steps}: assertion .order-total",
    )
