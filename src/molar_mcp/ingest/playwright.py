"""Build a Molar trace (events, steps, artifacts) from a Playwright trace.zip and its test result. Pure.

The mapping is documented in docs/playwright.md. In short: runner steps (`test.step`, hooks, fixtures)
and `tracing.group`s are steps; a call outside every step is a step of its own (category `action`);
calls inside a step are `action` / `assertion` events of the innermost step; network, console, page
errors and output land in the innermost step open at their time. Steps carry `parent_step_id`,
`category` and `depth` on `step.start`, so a store that understands nesting can number them as a tree.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from molar_mcp.ingest.bundle import BundleError, Overrides, ParsedBundle
from molar_mcp.ingest.formats.archive import SafeZip
from molar_mcp.ingest.formats.playwright_trace import DEFAULT_MAX_ACTIONS, PwAction, PwTrace, read_trace
from molar_mcp.ingest.results import TestResultInfo, slugify, strip_ansi
from molar_mcp.ingest.secrets import Secrets
from molar_mcp.models import ArtifactRef, Event
from molar_mcp.models.masking import mask
from molar_mcp.store.port import NewTrace

DEFAULT_MAX_TRACE_BYTES = 100 * 1024 * 1024
_MAX_EXPANSION = 10
INLINE_BODY = 4 * 1024
LOG_LINES = 12
_TEXT_TYPES = re.compile(
    r"^(text/|application/(json|.*\+json|javascript|x-javascript|xml|.*\+xml|x-www-form-urlencoded))"
)
_STEP_METHODS = {"hook": "hook", "fixture": "fixture", "test.step": "test.step", "step": "test.step"}
_DROPPED_GROUPS = {"configuration"}  # Playwright's viewer hides the fixtures that only read config
_PARAM_SKIP = {"timeout", "strict", "selector", "locator", "url", "value", "expectedText", "expression", "isNot"}


@dataclass
class Attachment:
    """A file that came with a result (failure screenshot, error-context.md, …)."""

    name: str
    content_type: str
    data: bytes


@dataclass
class _Built:
    events: list[tuple[float, int, int, dict[str, Any]]] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    artifacts: list[tuple[int, ArtifactRef]] = field(default_factory=list)
    counter: int = 0

    def add(self, ts: float, order: int, ev: dict[str, Any]) -> None:
        self.counter += 1
        self.events.append((ts, order, self.counter, ev))

    def blob(self, data: bytes, kind: str, name: str | None, content_type: str, rank: int) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if sha not in self.blobs:
            self.blobs[sha] = data
        if not any(a.sha256 == sha and a.kind == kind for _, a in self.artifacts):
            self.artifacts.append(
                (rank, ArtifactRef(kind=kind, sha256=sha, name=name, content_type=content_type, size=len(data)))
            )
        return sha


_MAX_SOURCES = 50
_MAX_SOURCE_BYTES = 1024 * 1024


def read_playwright_trace(
    data: bytes,
    *,
    filename: str | None = None,
    result: TestResultInfo | None = None,
    overrides: Overrides | None = None,
    attachments: list[Attachment] | None = None,
    keep_secrets: bool = False,
    max_bytes: int = DEFAULT_MAX_TRACE_BYTES,
    max_actions: int = DEFAULT_MAX_ACTIONS,
) -> ParsedBundle:
    """Parse and validate a trace.zip; raise `BundleError` naming the first problem. Stores nothing."""
    label = filename or "trace.zip"
    if len(data) > max_bytes:
        raise BundleError("payload_too_large", f"{label} is {len(data)} bytes; the limit is {max_bytes} bytes")
    archive = SafeZip(data, label=label, max_expanded=max_bytes * _MAX_EXPANSION)
    pw = read_trace(archive, max_actions=max_actions)
    return _Builder(pw, data, label, result, overrides or Overrides(), attachments or [], Secrets(keep_secrets)).build()


class _Builder:
    def __init__(
        self,
        pw: PwTrace,
        original: bytes,
        label: str,
        result: TestResultInfo | None,
        overrides: Overrides,
        attachments: list[Attachment],
        secrets: Secrets,
    ) -> None:
        self.pw = pw
        self.original = original
        self.label = label
        self.result = result
        self.o = overrides
        self.attachments = attachments
        self.secrets = secrets
        self.out = _Built()
        self.by_id = {a.call_id: a for a in pw.actions}
        self.step_of: dict[str, str | None] = {}  # call id → the step its events belong to
        self.depth: dict[str, int] = {}
        self.failure_lines: dict[str, str] = {}

    # ---- the step tree ----------------------------------------------------------------------

    def _dropped(self, a: PwAction) -> bool:
        seen = 0
        while a is not None and seen < 1000:
            if a.group in _DROPPED_GROUPS:
                return True
            a = self.by_id.get(a.parent_id or "")  # type: ignore[assignment]
            seen += 1
        return False

    def _is_step(self, a: PwAction) -> bool:
        return a.is_runner_step or a.is_group

    def _enclosing_step(self, a: PwAction) -> str | None:
        parent = self.by_id.get(a.parent_id or "")
        seen = 0
        while parent is not None and seen < 1000:
            if self._is_step(parent) or self.step_of.get(parent.call_id) == _sid(parent):
                return _sid(parent)
            parent = self.by_id.get(parent.parent_id or "")
            seen += 1
        return None

    def build(self) -> ParsedBundle:
        actions = [a for a in self.pw.actions if not self._dropped(a) and a.method != "test.attach"]
        # Steps: runner steps, groups, and every call that no step encloses.
        for a in actions:
            enclosing = self._enclosing_step(a)
            if self._is_step(a) or enclosing is None:
                self.step_of[a.call_id] = _sid(a)
                self.depth[a.call_id] = 0 if enclosing is None else self.depth.get(_call(enclosing), 0) + 1
            else:
                self.step_of[a.call_id] = enclosing
        self.failed_steps: set[str] = set()
        for a in actions:
            if a.error is not None:
                step = self.step_of[a.call_id]
                parent: PwAction | None = a
                seen = 0
                while parent is not None and seen < 1000:
                    if self.step_of.get(parent.call_id) == _sid(parent):
                        self.failed_steps.add(_sid(parent))
                    parent = self.by_id.get(parent.parent_id or "")
                    seen += 1
                self.failed_steps.add(step or "")
        for a in actions:
            self._action(a)
        for a in self.pw.actions:
            if a.method == "test.attach" or a.attachments:
                self._runner_attachments(a)
        self._timed_events()
        self._screenshots(actions)
        for i, att in enumerate(self.attachments):
            self._attachment(att.name, att.content_type, att.data, rank=20 + i)
        self._result_output()
        self._sources()
        self.out.blob(self._original(), "playwright", "trace.zip", "application/zip", rank=0)
        return ParsedBundle(trace=self._trace(actions), blobs=self.out.blobs)

    def _sources(self) -> None:
        """The test's own source files the trace carries (`src/<sha1 of the path>.<ext>`, the paths in the
        `.stacks` files), each an artifact of kind `source` named by its path — relative to the repository
        when the result says where it is — so an agent can read the test it patches (docs/replay.md)."""
        archive = self.pw.archive
        paths: dict[str, str] = {}
        for name in archive.names:
            if name.endswith(".stacks"):
                try:
                    doc = json.loads(archive.read(name))
                except (ValueError, BundleError):
                    continue
                for path in (doc.get("files") or [])[:200] if isinstance(doc, dict) else []:
                    if isinstance(path, str):
                        paths[hashlib.sha1(path.encode()).hexdigest()] = path  # noqa: S324 - Playwright's naming
        repo = self.result.repo.path if self.result is not None and self.result.repo else None
        shown = 0
        for name in sorted(archive.names):
            digest = posixpath.splitext(posixpath.basename(name))[0]
            if not name.startswith("src/") or digest not in paths or shown >= _MAX_SOURCES:
                continue
            if archive.size(name) > _MAX_SOURCE_BYTES:
                continue
            path = paths[digest]
            if repo and path.startswith(repo.rstrip("/") + "/"):
                path = path[len(repo.rstrip("/")) + 1 :]
            text = self.secrets.scrub(archive.read(name).decode("utf-8", errors="replace"))
            self.out.blob(text.encode(), "source", path.lstrip("/")[:500], "text/plain; charset=utf-8", rank=40 + shown)
            shown += 1

    def _action(self, a: PwAction) -> None:
        step = self.step_of[a.call_id]
        own_step = step == _sid(a)
        start, end = a.start, a.end if a.end is not None else a.start
        duration = max(0, round(end - start))
        where = _where(a)
        if own_step:
            parent_step = self._enclosing_step(a)
            category = "group" if a.is_group else _STEP_METHODS.get(a.method, "action")
            payload: dict[str, Any] = {"title": _title(a), "category": category, "depth": self.depth[a.call_id]}
            if parent_step is not None:
                payload["parent_step_id"] = parent_step
            if where:
                payload["location"] = where
            self.out.add(start, 0, {"kind": "step.start", "step_id": step, "message": _title(a), "payload": payload})
            end_payload: dict[str, Any] = {"duration_ms": duration}
            if a.error:
                end_payload["error"] = _clean(a.error.get("message", ""))[:500]
            ok = a.error is None and step not in self.failed_steps
            self.out.add(end, 2, {"kind": "step.end", "step_id": step, "ok": ok, "payload": end_payload})
        if self._is_step(a):
            return
        params = self.secrets.typed(a.library_method or a.method, a.params, a.log)
        if a.method == "expect" or a.library_method == "expect":
            assertion = self._assertion(a, params, duration)
            if a.error:
                self.failure_lines[a.call_id] = assertion["message"]
            self.out.add(end, 1, {"kind": "assertion", "step_id": step, **assertion})
            return
        payload = {
            "action": a.library_method or a.method,
            "api": f"{a.cls}.{a.library_method or a.method}",
            "call_id": a.call_id,
            "duration_ms": duration,
        }
        for key in ("selector", "url", "value", "key", "text"):
            if key in params:
                payload[key] = self.secrets.url(params[key]) if key == "url" else params[key]
        if "locator" in params:
            payload["locator"] = params["locator"]
        extra = {k: v for k, v in params.items() if k not in _PARAM_SKIP and k not in payload}
        if extra:
            payload["params"] = _compact(extra)
        if where:
            payload["location"] = where
        log = _log(a.log)
        if log:
            payload["log"] = [self.secrets.scrub(line) for line in log]
        if a.error:
            payload["error"] = {"name": a.error.get("name"), "message": self.secrets.scrub(_clean(a.error["message"]))}
        message = self.secrets.scrub(_title(a))
        self.out.add(
            end, 1, {"kind": "action", "step_id": step, "ok": a.error is None, "message": message, "payload": payload}
        )
        if a.error:
            err = _clean(a.error.get("message", ""))
            cause = _cause(a.log)
            self.failure_lines[a.call_id] = f"{_title(a)}: {_first_line(err)}" + (f" ({cause})" if cause else "")
            self.out.add(
                end,
                1,
                {
                    "kind": "error",
                    "step_id": step,
                    "ok": False,
                    "message": self.secrets.scrub(
                        f"{a.error.get('name') or 'Error'}: {_first_line(err)}" + (f" — {cause}" if cause else "")
                    ),
                    "payload": {
                        **({"cause": self.secrets.scrub(cause)} if cause else {}),
                        "name": a.error.get("name") or "Error",
                        "message": self.secrets.scrub(err[:4000]),
                        "call_id": a.call_id,
                        "action": payload["action"],
                        **({"selector": payload["selector"]} if "selector" in payload else {}),
                    },
                },
            )

    def _assertion(self, a: PwAction, params: dict[str, Any], duration: int) -> dict[str, Any]:
        error = _clean((a.error or {}).get("message", ""))
        matcher = _matcher(a, params)
        expected = _expected(params)
        actual = None
        parsed_expected, parsed_actual = _expected_received(error)
        if parsed_expected is not None:
            expected = parsed_expected
        if parsed_actual is not None:
            actual = parsed_actual
        if actual is None:
            for line in reversed(a.log):
                m = re.search(r'unexpected value "(.*)"\s*$', line)
                if m:
                    actual = m.group(1)
                    break
        payload: dict[str, Any] = {"matcher": matcher, "expected": expected, "actual": actual}
        sel = params.get("selector") or params.get("runner_locator") or params.get("locator")
        if sel:
            payload["selector"] = sel
        if params.get("isNot"):
            payload["is_not"] = True
        payload["duration_ms"] = duration
        payload["call_id"] = a.call_id
        where = _where(a)
        if where:
            payload["location"] = where
        # An assertion's call log repeats one poll: its last lines say it all. The whole error stays on the
        # runner's `error` event; here only when expected/actual could not be read from it.
        log = _log(a.log)[-4:]
        if log:
            payload["log"] = [self.secrets.scrub(line) for line in log]
        if a.error and (actual is None or expected is None):
            payload["error"] = self.secrets.scrub(error[:1000])
        target = f"expect({sel})" if sel else "expect"
        if a.error and actual is not None:
            first = f"{target}.{matcher}: expected {json.dumps(expected)}, received {json.dumps(actual)}"
        elif a.error:
            first = _first_line(error) or f"{target}.{matcher} failed"
        else:
            first = f"{target}.{matcher} passed"
        return {
            "ok": a.error is None,
            "message": self.secrets.scrub(first),
            "payload": self.secrets.scrub_any(payload),
        }

    # ---- what happened around the calls -------------------------------------------------------

    def _timed_events(self) -> None:
        s = self.secrets
        for i, (ts, entry, _) in enumerate(self.pw.resources):
            req, resp = entry.get("request") or {}, entry.get("response") or {}
            rid = f"r{i + 1}"
            method = str(req.get("method") or "GET")
            url = s.url(str(req.get("url") or ""))
            request_payload: dict[str, Any] = {"request_id": rid, "method": method, "url": url}
            headers = _header_dict(s.headers(req.get("headers")))
            if headers:
                request_payload["headers"] = headers
            if req.get("cookies"):
                request_payload["cookies"] = [
                    c.get("name") for c in s.cookies(req.get("cookies")) if isinstance(c, dict)
                ]
            post = req.get("postData")
            if isinstance(post, dict):
                self._body(request_payload, post, post.get("mimeType") or "", url, "request")
            self.out.add(ts, 1, {"kind": "network.request", "message": f"{method} {url}", "payload": request_payload})
            status = resp.get("status")
            failure = entry.get("_failureText") or resp.get("_failureText")
            took = entry.get("time")
            end = ts + (float(took) if isinstance(took, int | float) and took > 0 else 0.0)
            response_payload: dict[str, Any] = {"request_id": rid, "method": method, "url": url}
            if isinstance(status, int) and status > 0:
                response_payload["status"] = status
                if resp.get("statusText"):
                    response_payload["status_text"] = resp["statusText"]
            if isinstance(took, int | float) and took >= 0:
                response_payload["duration_ms"] = round(took)
            rheaders = _header_dict(s.headers(resp.get("headers")))
            if rheaders:
                response_payload["headers"] = rheaders
            if resp.get("cookies"):
                s.cookies(resp.get("cookies"))
            if entry.get("_resourceType"):
                response_payload["resource_type"] = entry["_resourceType"]
            content = resp.get("content")
            if isinstance(content, dict):
                self._body(response_payload, content, content.get("mimeType") or "", url, "response")
            ok = not failure and isinstance(status, int) and 0 < status < 400
            if failure:
                response_payload["failure"] = str(failure)
            label = f"{method} {url} → {status if isinstance(status, int) and status > 0 else failure or 'no response'}"
            self.out.add(end, 1, {"kind": "network.response", "ok": ok, "message": label, "payload": response_payload})
        for ts, msg in self.pw.console:
            level = str(msg.get("messageType") or "log")
            text = s.scrub(str(msg.get("text") or ""))
            loc = msg.get("location") or {}
            payload: dict[str, Any] = {"level": level, "text": text[:4000]}
            if isinstance(loc, dict) and loc.get("url"):
                payload["location"] = f"{s.url(str(loc['url']))}:{loc.get('lineNumber', 0)}"
            ev: dict[str, Any] = {"kind": "console", "message": text[:400], "payload": payload}
            if level == "error":
                ev["ok"] = False
            self.out.add(ts, 1, ev)
        for ts, err in self.pw.page_errors:
            text = s.scrub(_clean(str(err.get("message") or "")))
            name = str(err.get("name") or "Error")
            payload = {"name": name, "message": text[:4000], "source": "page"}
            if err.get("stack"):
                payload["stack"] = s.scrub(str(err["stack"]))[:2000]
            self.out.add(
                ts, 1, {"kind": "error", "ok": False, "message": f"{name}: {_first_line(text)}", "payload": payload}
            )
        for ts, stream, text in self.pw.stdio:
            clean = s.scrub(strip_ansi(text))
            self.out.add(
                ts, 1, {"kind": "log", "message": clean[:400], "payload": {"level": stream, "text": clean[:4000]}}
            )
        end = self.pw.end_ms or 0.0
        for ts, err in self.pw.runner_errors:
            text = s.scrub(_clean(str(err.get("message") or "")))
            payload = {"name": "Error", "message": text[:4000], "source": "runner"}
            if err.get("location"):
                payload["location"] = err["location"]
            expected, actual = _expected_received(text)
            if expected is not None:
                payload["expected"] = expected
                payload["actual"] = actual
            self.out.add(
                ts if ts > 0 else end,
                3,
                {"kind": "error", "ok": False, "message": _first_line(text), "payload": payload},
            )

    def _body(self, payload: dict[str, Any], part: dict[str, Any], mime: str, url: str, side: str) -> None:
        member = part.get("_file")
        data: bytes | None = None
        if member and self.pw.archive.has(str(member)):
            data = self.pw.archive.read(str(member))
        elif isinstance(part.get("text"), str):
            data = part["text"].encode()
        if not data:
            return
        base = mime.split(";")[0].strip().lower()
        if _TEXT_TYPES.match(base) and len(data) <= INLINE_BODY:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                text = None
            if text is not None:
                body: Any = text
                if "json" in base:
                    try:
                        body = json.loads(text)
                    except ValueError:
                        body = text
                if not self.secrets.keep:
                    body = self.secrets.scrub_any(mask(body) if isinstance(body, dict | list) else body)
                payload["body"] = body
                return
        if not self.secrets.keep and _TEXT_TYPES.match(base):
            data = self.secrets.scrub_bytes(data)
        name = posixpath.basename(url.split("?", 1)[0]) or f"{side}-body"
        sha = self.out.blob(data, "network-body", name, base or "application/octet-stream", rank=90)
        payload["body_sha256"] = sha
        payload["body_size"] = len(data)
        payload["body_type"] = base

    def _screenshots(self, actions: list[PwAction]) -> None:
        frames = self.pw.frames
        if not frames:
            return
        failing = [a for a in actions if a.error is not None and not self._is_step(a)]
        for n, a in enumerate(failing[:5], start=1):
            at = a.end if a.end is not None else a.start
            ts, member = min(frames, key=lambda f: abs(f[0] - at))
            if not self.pw.archive.has(member):
                continue
            sha = self.out.blob(self.pw.archive.read(member), "screenshot", f"failure-{n}.jpeg", "image/jpeg", rank=10)
            self.out.add(
                at,
                1,
                {
                    "kind": "screenshot",
                    "step_id": self.step_of.get(a.call_id),
                    "message": f"screen at the failure of {_title(a)}",
                    "payload": {"sha256": sha, "call_id": a.call_id, "frame_ms": round(ts)},
                },
            )
        ts, member = frames[-1]
        if self.pw.archive.has(member):
            self.out.blob(self.pw.archive.read(member), "screenshot", "last-frame.jpeg", "image/jpeg", rank=15)

    def _runner_attachments(self, a: PwAction) -> None:
        for i, att in enumerate(a.attachments):
            name = str(att.get("name") or "attachment")
            ctype = str(att.get("contentType") or "application/octet-stream")
            data: bytes | None = None
            member = att.get("file") or (("resources/" + str(att["sha1"])) if att.get("sha1") else None)
            if member and self.pw.archive.has(str(member)):
                data = self.pw.archive.read(str(member))
            elif isinstance(att.get("base64"), str):
                import base64
                import binascii

                try:
                    data = base64.b64decode(att["base64"], validate=True)
                except (binascii.Error, ValueError):
                    data = None
            if data is not None:
                self._attachment(name, ctype, data, rank=5 + i)

    def _attachment(self, name: str, content_type: str, data: bytes, *, rank: int) -> None:
        low = name.lower()
        if content_type == "application/zip" and low.startswith("trace"):
            return  # the trace itself
        if content_type.startswith("image/"):
            kind = "screenshot"
        elif "error-context" in low:
            kind = "error-context"
            data = self.secrets.scrub_bytes(data)
        else:
            kind = "attachment"
        # The failure screenshot right after the zip, then error-context.md, then the rest.
        rank = {"screenshot": 3, "error-context": 6}.get(kind, rank)
        ext = {"image/png": ".png", "image/jpeg": ".jpeg", "text/markdown": ".md"}.get(content_type, "")
        filename = name if "." in name or not ext else name + ext
        self.out.blob(data, kind, filename, content_type, rank=rank)

    def _result_output(self) -> None:
        r = self.result
        if r is None:
            return
        start = self.pw.start_ms or 0.0
        if r.retry:
            self.out.add(
                start, -1, {"kind": "retry", "message": f"attempt {r.retry + 1}", "payload": {"attempt": r.retry + 1}}
            )
        if not self.pw.stdio:
            end = self.pw.end_ms or start
            for stream, chunks in (("stdout", r.stdout), ("stderr", r.stderr)):
                for text in chunks[:1000]:
                    clean = self.secrets.scrub(strip_ansi(text))
                    self.out.add(
                        end,
                        1,
                        {"kind": "log", "message": clean[:400], "payload": {"level": stream, "text": clean[:4000]}},
                    )
        if not self.pw.runner_errors:
            end = self.pw.end_ms or start
            for err in r.errors[:20]:
                text = self.secrets.scrub(_clean(err.message))
                payload: dict[str, Any] = {"name": "Error", "message": text[:4000], "source": "runner"}
                expected, actual = _expected_received(text)
                if expected is not None:
                    payload["expected"], payload["actual"] = expected, actual
                self.out.add(end, 3, {"kind": "error", "ok": False, "message": _first_line(text), "payload": payload})

    def _original(self) -> bytes:
        """The uploaded trace.zip, with every masked secret masked in it too (rewritten only then)."""
        if self.secrets.keep or not self.secrets.values:
            return self.original
        src = self.pw.archive
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in src.names:
                data = src.read(name)
                if name.endswith((".trace", ".network", ".stacks")) or name.startswith("resources/"):
                    data = self.secrets.scrub_bytes(data)
                zf.writestr(name, data)
        return buf.getvalue()

    # ---- the trace row ----------------------------------------------------------------------

    def _trace(self, actions: list[PwAction]) -> NewTrace:
        events = self._events()
        r = self.result
        title = r.title() if r else None
        pw_title = self.pw.title()
        if not title and pw_title:
            title = pw_title
        slug = self.o.scenario_slug
        if not slug:
            if r is not None:
                slug = r.scenario_slug()
            elif pw_title:
                slug = slugify(re.sub(r":\d+(?=\s|$)", "", pw_title))
            else:
                slug = slugify(re.sub(r"\.zip$", "", posixpath.basename(self.label)))
        failing = [a for a in actions if a.error is not None and not self._is_step(a)]
        if r is not None:
            status = r.trace_status
        elif any("Test timeout of" in str(e.get("message")) for _, e in self.pw.runner_errors):
            status = "timed_out"
        elif failing or self.pw.runner_errors:
            status = "failed"
        else:
            status = "passed"
        signature = None
        if status not in ("passed", "skipped"):
            if failing:
                a = failing[-1] if self.pw.is_test else failing[0]
                signature = self.failure_lines.get(a.call_id) or _title(a)
            elif self.pw.runner_errors:
                signature = _first_line(_clean(str(self.pw.runner_errors[0][1].get("message"))))
            elif r is not None and r.errors:
                signature = _first_line(_clean(r.errors[0].message))
        start = self.pw.start_ms
        end = self.pw.end_ms
        created = datetime.fromtimestamp(start / 1000, tz=UTC) if start else None
        duration = r.duration_ms if r is not None and r.duration_ms is not None else None
        if duration is None and start is not None and end is not None:
            duration = max(0, round(end - start))
        artifacts = [a for _, a in sorted(self.out.artifacts, key=lambda x: x[0])]
        return NewTrace(
            scenario_slug=slug,
            scenario_title=(title or slug)[:500],
            status=status,
            source=self.o.source,
            code_sha=self.o.commit_sha or (r.commit if r else None),
            pr_number=self.o.pr_number,
            failure_signature=self.secrets.scrub(signature)[:500] if signature else None,
            created_at=created,
            duration_ms=duration,
            artifacts=artifacts,
            events=events,
        )

    def _events(self) -> list[Event]:
        ordered = sorted(self.out.events, key=lambda e: (e[0], e[1], e[2]))
        scrub = self.secrets.values and not self.secrets.keep
        # Events that named no step land in the innermost step open at their time.
        open_steps: list[str] = []
        out: list[Event] = []
        for seq, (ts, _order, _n, ev) in enumerate(ordered):
            kind = ev["kind"]
            if kind == "step.start":
                open_steps.append(ev["step_id"])
            step_id = ev.get("step_id") if "step_id" in ev else (open_steps[-1] if open_steps else None)
            if kind == "step.end" and ev["step_id"] in open_steps:
                open_steps.remove(ev["step_id"])
            out.append(
                Event(
                    seq=seq,
                    ts=max(0, round(ts)),
                    kind=kind,
                    step_id=step_id,
                    ok=ev.get("ok"),
                    message=self.secrets.scrub(ev["message"]) if scrub and ev.get("message") else ev.get("message"),
                    payload=self.secrets.scrub_any(ev.get("payload") or {}) if scrub else ev.get("payload") or {},
                )
            )
        return out


def _sid(a: PwAction) -> str:
    return "pw-" + a.call_id


def _call(step_id: str) -> str:
    return step_id[3:]


def _title(a: PwAction) -> str:
    if a.title:
        return strip_ansi(f"{a.title} {a.subtitle}" if a.subtitle else a.title)
    method = a.library_method or a.method
    p = a.params
    target = p.get("selector") or p.get("url") or p.get("locator") or ""
    if method in ("fill", "type") and "value" in p:
        return f"{method} {target} {json.dumps(p['value'])}".strip()
    if method == "press" and "key" in p:
        return f"press {target} {p['key']}".strip()
    return f"{method} {target}".strip() if target else f"{a.cls}.{method}"


def _where(a: PwAction) -> str | None:
    for frame in a.stack:
        f = frame.get("file")
        if f and "node_modules" not in str(f) and "site-packages" not in str(f):
            return f"{f}:{frame.get('line')}"
    return None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return ""


def _clean(text: str) -> str:
    text = strip_ansi(text)
    return text[7:] if text.startswith("Error: ") else text


def _log(lines: list[str]) -> list[str]:
    """The call log, repeated lines folded (`× N`), the last `LOG_LINES` kept."""
    folded: list[list[Any]] = []
    for line in lines:
        text = strip_ansi(line).rstrip()
        if not text:
            continue
        # Playwright repeats "locator resolved to … / unexpected value …" every poll: fold by content.
        hit = next((f for f in folded[-4:] if f[0] == text), None)
        if hit is not None:
            hit[1] += 1
            continue
        folded.append([text, 1])
    out = [t if n == 1 else f"{t} (×{n})" for t, n in folded]
    if len(out) > LOG_LINES:
        out = [*out[:2], f"… {len(out) - LOG_LINES} lines …", *out[-(LOG_LINES - 2) :]]
    return out


_CAUSES = re.compile(
    r"(intercepts pointer events|element is not (enabled|visible|stable|editable|attached)|unexpected value"
    r"|strict mode violation|resolved to \d+ elements|net::ERR_|element is outside of the viewport)"
)


def _cause(lines: list[str]) -> str | None:
    """The call-log line that says why a call failed (Playwright keeps the reason only there)."""
    for line in reversed(lines):
        text = strip_ansi(line).strip()
        if _CAUSES.search(text):
            return text[:300]
    waits = [strip_ansi(x).strip() for x in lines if x.strip()]
    if waits and waits[-1].startswith("waiting for ") and "locator" in waits[-1]:
        return "no element matched: " + waits[-1][len("waiting for ") :][:250]
    return None


def _matcher(a: PwAction, params: dict[str, Any]) -> str:
    m = re.search(r'Expect "([^"]+)"', a.title or "")
    if m:
        return m.group(1)
    expr = params.get("expression")
    if isinstance(expr, str):
        parts = expr.split(".")
        return parts[0] + "".join(p.capitalize() for p in parts[1:])  # to.have.text → toHaveText
    return "expect"


def _expected(params: dict[str, Any]) -> Any:
    if "runner_expected" in params:
        return params["runner_expected"]
    if "expected" in params and not isinstance(params["expected"], dict):
        return params["expected"]
    texts = params.get("expectedText")
    if isinstance(texts, list) and texts:
        vals = []
        for t in texts:
            if isinstance(t, dict):
                if "string" in t:
                    vals.append(t["string"])
                elif "regexSource" in t:
                    vals.append(f"/{t['regexSource']}/{t.get('regexFlags', '')}")
        return vals[0] if len(vals) == 1 else vals
    if "expectedNumber" in params:
        return params["expectedNumber"]
    value = params.get("expectedValue")
    if isinstance(value, dict) and isinstance(value.get("value"), dict):
        v = value["value"]
        for key in ("s", "n", "b"):
            if key in v:
                return v[key]
    return None


def _expected_received(error: str) -> tuple[str | None, str | None]:
    """`Expected: …` / `Received: …` lines of an expect error (ANSI already stripped)."""
    exp = re.search(r"^\s*Expected(?: [a-z ]+)?: (.*)$", error, re.MULTILINE)
    got = re.search(r"^\s*Received(?: [a-z ]+)?: (.*)$", error, re.MULTILINE)
    return (_unquote(exp.group(1)) if exp else None, _unquote(got.group(1)) if got else None)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
            return value if isinstance(value, str) else text
        except ValueError:
            return text[1:-1]
    return text


def _header_dict(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(headers, list):
        for h in headers[:60]:
            if isinstance(h, dict) and "name" in h:
                out[str(h["name"]).lower()] = str(h.get("value", ""))[:500]
    return out


def _compact(value: Any, depth: int = 0) -> Any:
    if depth > 3:
        return "…"
    if isinstance(value, dict):
        return {k: _compact(v, depth + 1) for k, v in list(value.items())[:20]}
    if isinstance(value, list):
        return [_compact(v, depth + 1) for v in value[:20]]
    if isinstance(value, str) and len(value) > 300:
        return value[:299] + "…"
    return value


def trace_from_result(
    result: TestResultInfo,
    *,
    attachments: list[Attachment] | None = None,
    overrides: Overrides | None = None,
    keep_secrets: bool = False,
    note: str | None = None,
) -> ParsedBundle:
    """A trace of a test result that came without a readable trace.zip: its errors, output and files."""
    o = overrides or Overrides()
    secrets = Secrets(keep_secrets)
    out = _Built()
    start = _iso_ms(result.start_time) if result.start_time else datetime.now(tz=UTC).timestamp() * 1000
    end = start + (result.duration_ms or 0)
    if result.retry:
        out.add(
            start,
            -1,
            {"kind": "retry", "message": f"attempt {result.retry + 1}", "payload": {"attempt": result.retry + 1}},
        )
    if note:
        out.add(start, 0, {"kind": "log", "message": note, "payload": {"level": "molar", "text": note}})
    for stream, chunks in (("stdout", result.stdout), ("stderr", result.stderr)):
        for text in chunks[:1000]:
            clean = strip_ansi(text)
            out.add(
                start, 1, {"kind": "log", "message": clean[:400], "payload": {"level": stream, "text": clean[:4000]}}
            )
    for err in result.errors[:20]:
        text = _clean(err.message)
        payload: dict[str, Any] = {"name": "Error", "message": text[:4000], "source": "runner"}
        expected, actual = _expected_received(text)
        if expected is not None:
            payload["expected"], payload["actual"] = expected, actual
        out.add(end, 3, {"kind": "error", "ok": False, "message": _first_line(text), "payload": payload})
    for i, att in enumerate(attachments or []):
        kind = (
            "screenshot"
            if att.content_type.startswith("image/")
            else ("error-context" if "error-context" in att.name else "attachment")
        )
        out.blob(att.data, kind, att.name, att.content_type, rank=5 + i)
    events = [
        Event(
            seq=i,
            ts=max(0, round(ts)),
            kind=ev["kind"],
            ok=ev.get("ok"),
            message=secrets.scrub(ev.get("message") or "") or None,
            payload=ev.get("payload") or {},
        )
        for i, (ts, _o, _n, ev) in enumerate(sorted(out.events, key=lambda e: (e[0], e[1], e[2])))
    ]
    signature = _first_line(_clean(result.errors[0].message)) if result.errors else None
    slug = o.scenario_slug or result.scenario_slug()
    return ParsedBundle(
        trace=NewTrace(
            scenario_slug=slug,
            scenario_title=result.title()[:500],
            status=result.trace_status,
            source=o.source,
            code_sha=o.commit_sha or result.commit,
            pr_number=o.pr_number,
            failure_signature=signature[:500]
            if signature and result.trace_status not in ("passed", "skipped")
            else None,
            created_at=datetime.fromtimestamp(start / 1000, tz=UTC),
            duration_ms=result.duration_ms,
            artifacts=[a for _, a in sorted(out.artifacts, key=lambda x: x[0])],
            events=events,
        ),
        blobs=out.blobs,
    )


def _iso_ms(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return datetime.now(tz=UTC).timestamp() * 1000
