"""Read a Playwright trace.zip into one merged timeline (pure: no store).

What a trace.zip holds (Playwright's trace format, versions up to 10):

- `<prefix>.trace`: JSON lines. `context-options` first (format `version`, `origin` library | testRunner,
  `wallTime`/`monotonicTime`), then `before`/`input`/`log`/`after` of each call (or one `action` in older
  versions), `event` (page errors, …), `console`, `screencast-frame`, `stdout`/`stderr`, `error`.
- `<prefix>.network`: `resource-snapshot` lines, each a HAR entry; bodies live in `resources/`.
- `<prefix>.stacks`: client call stacks; `src/`: sources; `resources/`, `screencast/`, `attachments/`.

A library trace has one prefix (`trace`); a chunk of a chunked trace is a trace of its own. Playwright
Test merges the runner's `test.trace` (steps, hooks, fixtures, expects, errors, attachments) with one
library trace per browser context (`0-trace.*`, `1-trace.*`); runner and library calls are the same
call when their step id (or call id) matches, and the runner's view wins for timing, parent and error.
Times are converted to epoch milliseconds with each context's `wallTime - monotonicTime`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from molar_mcp.ingest.bundle import BundleError
from molar_mcp.ingest.formats.archive import SafeZip

MAX_TRACE_VERSION = 10
DEFAULT_MAX_ACTIONS = 50_000
_TRACE_NAME = re.compile(r"^(?:(.*)/)?([^/]*)\.trace$")


@dataclass
class PwAction:
    call_id: str
    start: float  # epoch ms
    end: float | None
    cls: str
    method: str
    title: str | None = None
    subtitle: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    step_id: str | None = None
    page_id: str | None = None
    group: str | None = None
    error: dict[str, Any] | None = None
    log: list[str] = field(default_factory=list)
    stack: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    origin: str = "library"
    library_method: str | None = None  # a merged runner call keeps its library method here

    @property
    def is_runner_step(self) -> bool:
        return self.origin == "testRunner" and self.method in ("hook", "fixture", "test.step", "step")

    @property
    def is_group(self) -> bool:
        return self.method == "tracingGroup" or (self.cls == "Tracing" and self.method == "group")


# Calls of the recording itself, which older releases (format 3) put in the trace: not the test's calls.
_TRACING_ITSELF = frozenset({"tracingStart", "tracingStartChunk", "tracingStopChunk", "tracingStop"})


@dataclass
class PwContext:
    prefix: str
    origin: str
    version: int
    offset: float  # epoch ms = monotonic + offset
    wall_time: float | None = None
    start_monotonic: float | None = None  # when this trace (or chunk) began recording
    title: str | None = None
    browser: str | None = None
    sdk_language: str | None = None
    playwright_version: str | None = None
    actions: dict[str, PwAction] = field(default_factory=dict)


@dataclass
class PwTrace:
    archive: SafeZip
    contexts: list[PwContext]
    actions: list[PwAction]  # merged, ordered by start
    console: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    page_errors: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    runner_errors: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    stdio: list[tuple[float, str, str]] = field(default_factory=list)  # ts, stream, text
    resources: list[tuple[float, dict[str, Any], str]] = field(default_factory=list)  # ts, HAR entry, where
    frames: list[tuple[float, str]] = field(default_factory=list)  # ts, archive member
    version: int = MAX_TRACE_VERSION

    @property
    def is_test(self) -> bool:
        return any(c.origin == "testRunner" for c in self.contexts)

    @property
    def start_ms(self) -> float | None:
        times = [a.start for a in self.actions] + [c.wall_time for c in self.contexts if c.wall_time]
        return min(times) if times else None

    @property
    def end_ms(self) -> float | None:
        times = [a.end for a in self.actions if a.end is not None] + [a.start for a in self.actions]
        times += [t for t, _ in self.frames] + [t for t, _, _ in self.resources]
        return max(times) if times else None

    def title(self) -> str | None:
        for origin in ("testRunner", "library"):
            for c in self.contexts:
                if c.origin == origin and c.title:
                    return c.title
        return None

    def library_context(self) -> PwContext | None:
        return next((c for c in self.contexts if c.origin == "library" and c.browser), None)


def trace_prefixes(names: list[str]) -> list[str]:
    """`.trace` members (without the suffix): the runner's `test` first, then library contexts in order."""
    prefixes = [m.group(0)[: -len(".trace")] for n in names if (m := _TRACE_NAME.match(n))]
    return sorted(prefixes, key=lambda p: (not p.endswith("test"), p))


def looks_like_trace(archive: SafeZip) -> bool:
    return bool(trace_prefixes(archive.names))


def read_trace(archive: SafeZip, *, max_actions: int = DEFAULT_MAX_ACTIONS) -> PwTrace:
    """Parse every context of a trace archive and merge them; raise `BundleError` on anything unreadable."""
    prefixes = trace_prefixes(archive.names)
    if not prefixes:
        raise BundleError(
            "validation_error",
            f"{archive.label} is a zip but no Playwright trace: it has no .trace file "
            "(a Molar bundle has summary.json, a trace.zip has trace.trace or test.trace)",
        )
    reader = _Reader(archive, max_actions)
    for prefix in prefixes:
        reader.read_context(prefix)
    return reader.finish()


class _Reader:
    def __init__(self, archive: SafeZip, max_actions: int) -> None:
        self.archive = archive
        self.max_actions = max_actions
        self.contexts: list[PwContext] = []
        self.action_count = 0
        self.trace = PwTrace(archive=archive, contexts=[], actions=[])

    # ---- one context ------------------------------------------------------------------------

    def read_context(self, prefix: str) -> None:
        name = prefix + ".trace"
        lines = self.archive.read(name).splitlines()
        ctx: PwContext | None = None
        consoles: dict[str, dict[str, Any]] = {}
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip() or raw.startswith(b'{"type":"frame-snapshot"'):
                continue  # DOM snapshots are kept in the original archive, not read here
            ev = _json_line(raw, name, lineno)
            if ctx is None:
                ctx = self._context(prefix, ev, name)
                if ev.get("type") == "context-options":
                    continue
            try:
                self._event(ctx, ev, consoles)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise BundleError(
                    "validation_error", f"{name} line {lineno}: not a Playwright trace event ({exc!r})"
                ) from exc
        if ctx is None:
            raise BundleError("validation_error", f"{name} is empty: no context-options line")
        self._network(ctx, prefix)
        self._stacks(ctx, prefix)
        self.contexts.append(ctx)

    def _context(self, prefix: str, ev: dict[str, Any], name: str) -> PwContext:
        if ev.get("type") != "context-options":
            # Traces before version 7 could start without it; the viewer assumes a runner trace of version 6.
            return PwContext(prefix, "testRunner" if prefix.endswith("test") else "library", 6, 0.0)
        version = ev.get("version", 6)
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError("validation_error", f"{name} line 1: the trace format version {version!r} is no number")
        if version > MAX_TRACE_VERSION:
            raise BundleError(
                "unsupported_version",
                f"{name}: trace format version {version} is newer than this server reads "
                f"(versions up to {MAX_TRACE_VERSION}); upgrade molar-mcp",
            )
        if version < 1:
            raise BundleError("unsupported_version", f"{name}: trace format version {version} is not readable")
        wall = _num(ev.get("wallTime"))
        mono = _num(ev.get("monotonicTime"))
        ctx = PwContext(
            prefix=prefix,
            origin=str(ev.get("origin") or ("testRunner" if prefix.endswith("test") else "library")),
            version=version,
            offset=(wall - mono) if wall and mono else 0.0,
            wall_time=wall or None,
            start_monotonic=mono or None,
            title=ev.get("title") if isinstance(ev.get("title"), str) else None,
            browser=ev.get("browserName") or None,
            sdk_language=ev.get("sdkLanguage") or None,
            playwright_version=ev.get("playwrightVersion") or None,
        )
        self.trace.version = min(self.trace.version, version)
        return ctx

    def _time(self, ctx: PwContext, value: Any) -> float:
        t = _num(value)
        if not ctx.offset and ctx.wall_time and t < 1e11:
            # Before version 7 times were monotonic without an origin: anchor the first one at wallTime.
            ctx.offset = ctx.wall_time - t
        return t + ctx.offset

    def _new_action(self, ctx: PwContext, call_id: str, action: PwAction) -> None:
        if call_id not in ctx.actions:
            self.action_count += 1
            if self.action_count > self.max_actions:
                raise BundleError(
                    "payload_too_large",
                    f"the trace has more than {self.max_actions} actions; record a smaller run (or split it in chunks)",
                )
        ctx.actions[call_id] = action

    def _event(self, ctx: PwContext, ev: dict[str, Any], consoles: dict[str, dict[str, Any]]) -> None:
        kind = ev.get("type")
        if "metadata" in ev and kind in ("action", "event"):
            ev = _from_metadata(ev)  # versions before 4 wrapped every call in `metadata`
            kind = ev["type"]
        if kind == "before" or kind == "action":
            if ev.get("class") == "Tracing" and ev.get("method") in _TRACING_ITSELF:
                return  # the recording's own start/stop (older releases logged it, "interrupted" by the save)
            call_id = str(ev["callId"])
            title = ev.get("title") or ev.get("apiName")
            action = PwAction(
                call_id=call_id,
                start=self._time(ctx, ev["startTime"]),
                end=self._time(ctx, ev["endTime"]) if kind == "action" and ev.get("endTime") else None,
                cls=str(ev.get("class", "")),
                method=str(ev.get("method", "")),
                title=str(title) if title else None,
                subtitle=str(ev["subtitle"]) if isinstance(ev.get("subtitle"), str) else None,
                params=dict(ev["params"]) if isinstance(ev.get("params"), dict) else {},
                parent_id=ev.get("parentId"),
                step_id=ev.get("stepId"),
                page_id=ev.get("pageId"),
                group=ev.get("group"),
                stack=list(ev["stack"]) if isinstance(ev.get("stack"), list) else [],
                origin=ctx.origin,
            )
            if kind == "action":
                action.error = _error_of(ev.get("error"))
                action.log = [str(m) for m in ev.get("log") or [] if m]
            self._new_action(ctx, call_id, action)
        elif kind == "log":
            found = ctx.actions.get(str(ev.get("callId")))
            if found is not None:  # Playwright's viewer tolerates logs of unknown calls too
                found.log.append(str(ev.get("message", "")))
        elif kind == "after":
            found = ctx.actions.get(str(ev.get("callId")))
            if found is None:
                return
            found.end = self._time(ctx, ev["endTime"]) if ev.get("endTime") else found.end
            found.error = _error_of(ev.get("error")) or found.error
            found.attachments = [a for a in ev.get("attachments") or [] if isinstance(a, dict)]
            # Version 5 kept the call log on `after`.
            for line in ev.get("log") or []:
                found.log.append(str(line))
        elif kind == "event":
            method = ev.get("method")
            if method == "pageError":
                err = (ev.get("params") or {}).get("error") or {}
                self.trace.page_errors.append((self._time(ctx, ev["time"]), _error_of(err) or {"message": str(err)}))
            elif method == "console" and isinstance(ev.get("params"), dict) and "message" in ev["params"]:
                msg = consoles.get(str((ev["params"]["message"] or {}).get("guid")))
                if msg is not None:
                    self.trace.console.append((self._time(ctx, ev["time"]), msg))
        elif kind == "object" and ev.get("class") == "ConsoleMessage":
            init = ev.get("initializer") or {}
            consoles[str(ev.get("guid"))] = {
                "messageType": init.get("type"),
                "text": init.get("text"),
                "location": init.get("location"),
            }
        elif kind == "console":
            self.trace.console.append((self._time(ctx, ev["time"]), ev))
        elif kind == "screencast-frame":
            member = ev.get("file") or ("resources/" + str(ev.get("sha1")))
            self.trace.frames.append((self._time(ctx, ev["timestamp"]), str(member)))
        elif kind in ("stdout", "stderr"):
            text = ev.get("text")
            if text is None and ev.get("base64"):
                text = "(binary output)"
            self.trace.stdio.append((self._time(ctx, ev.get("timestamp", 0)), kind, str(text or "")))
        elif kind == "error":
            self.trace.runner_errors.append(
                (self._time(ctx, ev.get("time") or 0) if ev.get("time") else -1.0, _runner_error(ev))
            )

    def _network(self, ctx: PwContext, prefix: str) -> None:
        name = prefix + ".network"
        if not self.archive.has(name):
            return
        for lineno, raw in enumerate(self.archive.read(name).splitlines(), start=1):
            if not raw.strip():
                continue
            ev = _json_line(raw, name, lineno)
            if ev.get("type") != "resource-snapshot":
                continue
            entry = ev.get("snapshot")
            if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
                raise BundleError("validation_error", f"{name} line {lineno}: a resource-snapshot without a request")
            mono = entry.get("_monotonicTime")
            if _before_chunk(ctx, mono, entry.get("time")):
                continue
            for part in (entry.get("request", {}).get("postData"), (entry.get("response") or {}).get("content")):
                if isinstance(part, dict):
                    if part.get("_sha1") and not part.get("_file"):
                        part["_file"] = "resources/" + str(part["_sha1"])
                    member = part.get("_file")
                    if member and not self.archive.has(str(member)):
                        raise BundleError(
                            "validation_error",
                            f"{name} line {lineno} names {member}, which {self.archive.label} lacks "
                            "(a missing resource: the archive is incomplete)",
                        )
            ts = self._time(ctx, mono) if mono else _iso_ms(entry.get("startedDateTime"))
            self.trace.resources.append((ts, entry, f"{name} line {lineno}"))

    def _stacks(self, ctx: PwContext, prefix: str) -> None:
        name = prefix + ".stacks"
        if not self.archive.has(name):
            return
        try:
            doc = json.loads(self.archive.read(name))
            files = doc.get("files") or []
            for call_id, frames in doc.get("stacks") or []:
                action = ctx.actions.get(str(call_id))
                if action is None or action.stack:
                    continue
                action.stack = [
                    {"file": files[f[0]], "line": f[1], "column": f[2], "function": f[3] if len(f) > 3 else None}
                    for f in frames
                    if isinstance(f, list) and len(f) >= 3 and isinstance(f[0], int) and 0 <= f[0] < len(files)
                ]
        except (ValueError, TypeError, AttributeError):
            return  # stacks only add source locations; a broken file loses nothing else

    # ---- merge ------------------------------------------------------------------------------

    def finish(self) -> PwTrace:
        trace = self.trace
        trace.contexts = self.contexts
        runners = [c for c in self.contexts if c.origin == "testRunner"]
        libraries = [c for c in self.contexts if c.origin != "testRunner"]
        merged: dict[str, PwAction] = {}
        by_call: dict[str, PwAction] = {}
        for c in libraries:
            for a in c.actions.values():
                merged[a.step_id or f"{c.prefix}/{a.call_id}"] = a
                by_call[a.call_id] = a
        renamed: dict[str, str] = {}
        for c in runners:
            for a in sorted(c.actions.values(), key=lambda x: x.start):
                lib = merged.get(a.step_id or "") or by_call.get(a.step_id or a.call_id)
                if lib is not None and lib.origin != "testRunner":
                    renamed[a.call_id] = lib.call_id
                    lib.library_method = lib.method
                    lib.origin = "merged"
                    lib.title = a.title or lib.title
                    lib.subtitle = a.subtitle or lib.subtitle
                    lib.start = a.start
                    lib.end = a.end if a.end is not None else lib.end
                    lib.error = a.error or lib.error
                    lib.attachments = a.attachments or lib.attachments
                    lib.parent_id = a.parent_id
                    lib.group = a.group or lib.group
                    lib.stack = a.stack or lib.stack
                    if a.method == "expect":
                        lib.params = {**lib.params, **{f"runner_{k}": v for k, v in a.params.items()}}
                    continue
                merged[f"runner/{a.call_id}"] = a
        for a in merged.values():
            if a.parent_id is not None:
                a.parent_id = renamed.get(a.parent_id, a.parent_id)
        trace.actions = sorted(merged.values(), key=lambda a: a.start)
        # An action with no `after` (the trace was saved before it ended): end it with its last child.
        by_id = {a.call_id: a for a in trace.actions}
        for a in reversed(trace.actions):
            if a.parent_id and a.parent_id in by_id:
                parent = by_id[a.parent_id]
                end = a.end if a.end is not None else a.start
                if parent.end is None or (parent.end < end and parent.error is None):
                    parent.end = max(parent.end or end, end)
        trace.console.sort(key=lambda x: x[0])
        trace.resources.sort(key=lambda x: x[0])
        trace.frames.sort(key=lambda x: x[0])
        return trace


def _json_line(raw: bytes, name: str, lineno: int) -> dict[str, Any]:
    try:
        ev = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError("validation_error", f"{name} line {lineno} is not JSON ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise BundleError("validation_error", f"{name} line {lineno} is not UTF-8 text") from exc
    if not isinstance(ev, dict):
        raise BundleError("validation_error", f"{name} line {lineno} is not a JSON object")
    return ev


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if value is None:
            return 0.0
        raise ValueError(f"{value!r} is not a time")
    return float(value)


def _iso_ms(value: Any) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return 0.0


def _error_of(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    if isinstance(value, str):
        return {"name": "Error", "message": value}
    if isinstance(value, dict):
        inner: dict[str, Any] = value["error"] if isinstance(value.get("error"), dict) else value
        if "message" not in inner and "value" in value:
            return {"name": "Error", "message": json.dumps(value["value"])[:500]}
        return {
            "name": str(inner.get("name") or "Error"),
            "message": str(inner.get("message") or ""),
            "stack": inner.get("stack") if isinstance(inner.get("stack"), str) else None,
        }
    return {"name": "Error", "message": str(value)}


def _runner_error(ev: dict[str, Any]) -> dict[str, Any]:
    stack = ev.get("stack")
    where = None
    if isinstance(stack, list) and stack and isinstance(stack[0], dict):
        where = f"{stack[0].get('file')}:{stack[0].get('line')}"
    return {"name": "Error", "message": str(ev.get("message") or ""), "location": where}


def _from_metadata(ev: dict[str, Any]) -> dict[str, Any]:
    """A version 1–3 call or event (`{type, metadata}`) in the newer shape."""
    m = ev["metadata"]
    if ev["type"] == "event":
        return {
            "type": "event",
            "time": m.get("startTime"),
            "class": m.get("type"),
            "method": m.get("method"),
            "params": m.get("params"),
            "pageId": m.get("pageId"),
        }
    return {
        "type": "action",
        "callId": m.get("id"),
        "startTime": m.get("startTime"),
        "endTime": m.get("endTime"),
        "apiName": m.get("apiName") or f"{m.get('type')}.{m.get('method')}",
        "class": m.get("type"),
        "method": m.get("method"),
        "params": m.get("params"),
        "log": m.get("log"),
        "error": m.get("error"),
        "pageId": m.get("pageId"),
        "stack": m.get("stack"),
    }


def _before_chunk(ctx: PwContext, monotonic: Any, duration: Any) -> bool:
    """A request that ended before this trace began: Playwright writes one network file for all the chunks
    of a chunked trace (`start_chunk`/`stop_chunk`), so each chunk's zip also holds the earlier chunks'
    requests. A request still under way when the chunk began is the chunk's too."""
    if ctx.start_monotonic is None or ctx.version < 7 or not isinstance(monotonic, int | float):
        return False
    took = duration if isinstance(duration, int | float) and duration > 0 else 0
    return bool(monotonic + took < ctx.start_monotonic)
