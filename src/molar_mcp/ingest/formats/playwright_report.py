"""Playwright Test's JSON report and JUnit XML → one `ReportedResult` per test attempt (pure).

Either comes bare (results only) or as a zip of the report folder, whose `test-results/` holds the
trace.zip and attachments of each attempt. Attachment paths are matched against the zip by their
longest trailing part, so absolute paths written on the CI machine still find their files.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from molar_mcp.ingest.bundle import BundleError
from molar_mcp.ingest.formats.archive import SafeZip, is_zip
from molar_mcp.ingest.results import ResultError, TestResultInfo

MAX_RESULTS = 20_000
_ATTACHMENT_LINE = re.compile(r"\[\[ATTACHMENT\|([^\]]+)\]\]")


@dataclass
class AttachmentRef:
    name: str
    content_type: str
    path: str | None = None
    body: bytes | None = None


@dataclass
class ReportedResult:
    result: TestResultInfo
    test_key: str
    outcome: str | None = None  # the test's outcome over its attempts: expected, unexpected, flaky, skipped
    trace_path: str | None = None
    attachments: list[AttachmentRef] = field(default_factory=list)


@dataclass
class Report:
    results: list[ReportedResult]
    archive: SafeZip | None
    errors: list[str] = field(default_factory=list)

    def find(self, path: str) -> str | None:
        """The archive member a result's path names (by its longest matching tail), or None."""
        if self.archive is None:
            return None
        parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
        for i in range(len(parts)):
            candidate = "/".join(parts[i:])
            if self.archive.has(candidate):
                return candidate
        return None


def _open(data: bytes, label: str, max_expanded: int, pick: Any) -> tuple[bytes, SafeZip | None]:
    if not is_zip(data):
        return data, None
    archive = SafeZip(data, label=label, max_expanded=max_expanded)
    names = [n for n in archive.names if pick(n)]
    if not names:
        raise BundleError("validation_error", f"{label} holds no report file")
    return archive.read(sorted(names, key=len)[0]), archive


def read_json_report(data: bytes, *, label: str, max_expanded: int) -> Report:
    raw, archive = _open(
        data, label, max_expanded, lambda n: n.endswith(".json") and "report" in n.rsplit("/", 1)[-1].lower()
    )
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(
            "validation_error", f"{label}: the report is not JSON (line {exc.lineno}: {exc.msg})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise BundleError("validation_error", f"{label}: the report is not UTF-8 text") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("suites"), list):
        raise BundleError("validation_error", f"{label}: not a Playwright JSON report (no `suites` list)")
    results: list[ReportedResult] = []
    for suite in doc["suites"]:
        _walk_suite(suite, [], results, label)
    errors = [str(e.get("message", ""))[:2000] for e in doc.get("errors") or [] if isinstance(e, dict)]
    return Report(results, archive, errors)


def _walk_suite(suite: Any, titles: list[str], out: list[ReportedResult], label: str) -> None:
    if not isinstance(suite, dict):
        raise BundleError("validation_error", f"{label}: a suite is not an object")
    file = suite.get("file")
    # The top suite of a file is titled with the file name; describes below it add their titles.
    own = [] if not titles and suite.get("title") == file else [str(suite.get("title", ""))]
    path = [*titles, *own]
    for spec in suite.get("specs") or []:
        for test in spec.get("tests") or []:
            project = test.get("projectName") or test.get("projectId") or None
            title_path = [*path, str(spec.get("title", ""))]
            key = "\x1f".join([project or "", str(spec.get("file") or file or ""), *title_path])
            for r in test.get("results") or []:
                if len(out) >= MAX_RESULTS:
                    raise BundleError("payload_too_large", f"{label} has more than {MAX_RESULTS} results")
                out.append(_result(r, spec, test, project, title_path, key, file, label))
    for child in suite.get("suites") or []:
        _walk_suite(child, path, out, label)


def _result(
    r: dict[str, Any],
    spec: dict[str, Any],
    test: dict[str, Any],
    project: str | None,
    title_path: list[str],
    key: str,
    file: str | None,
    label: str,
) -> ReportedResult:
    errors = [ResultError(message=str(e.get("message", "")), stack=e.get("stack")) for e in r.get("errors") or []]
    if not errors and isinstance(r.get("error"), dict):
        errors = [ResultError(message=str(r["error"].get("message", "")), stack=r["error"].get("stack"))]
    try:
        info = TestResultInfo(
            project=project,
            file=spec.get("file") or file,
            line=spec.get("line"),
            title_path=title_path,
            status=r.get("status", "failed"),
            expected_status=test.get("expectedStatus"),
            retry=int(r.get("retry", 0)),
            duration_ms=round(r["duration"])
            if isinstance(r.get("duration"), int | float) and r["duration"] >= 0
            else None,
            errors=errors,
            stdout=[_chunk(c) for c in r.get("stdout") or []],
            stderr=[_chunk(c) for c in r.get("stderr") or []],
            start_time=r.get("startTime"),
        )
    except (ValidationError, ValueError, TypeError) as exc:
        raise BundleError("validation_error", f"{label}: result of {' › '.join(title_path)!r}: {exc}") from exc
    trace_path = None
    attachments: list[AttachmentRef] = []
    for a in r.get("attachments") or []:
        if not isinstance(a, dict):
            continue
        name, ctype = str(a.get("name", "attachment")), str(a.get("contentType", "application/octet-stream"))
        if name == "trace" and a.get("path"):
            trace_path = str(a["path"])
        elif a.get("path"):
            attachments.append(AttachmentRef(name, ctype, path=str(a["path"])))
        elif isinstance(a.get("body"), str):
            import base64
            import binascii

            try:
                attachments.append(AttachmentRef(name, ctype, body=base64.b64decode(a["body"])))
            except (binascii.Error, ValueError):
                continue
    return ReportedResult(info, key, test.get("status"), trace_path, attachments)


def _chunk(c: Any) -> str:
    if isinstance(c, dict):
        return str(c.get("text") or ("(binary output)" if c.get("buffer") else ""))
    return str(c)


def read_junit(data: bytes, *, label: str, max_expanded: int) -> Report:
    raw, archive = _open(data, label, max_expanded, lambda n: n.endswith(".xml") and "/resources/" not in f"/{n}")
    if b"<!ENTITY" in raw or b"<!DOCTYPE" in raw:
        raise BundleError("validation_error", f"{label}: JUnit XML with a DOCTYPE or entities is refused")
    try:
        root = ET.fromstring(raw)  # noqa: S314 - no DOCTYPE or entities (refused above)
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else "?"
        raise BundleError("validation_error", f"{label}: not well-formed XML (line {line}: {exc})") from exc
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    results: list[ReportedResult] = []
    for suite in suites:
        project = suite.get("hostname") or None
        for case in suite.iter("testcase"):
            if len(results) >= MAX_RESULTS:
                raise BundleError("payload_too_large", f"{label} has more than {MAX_RESULTS} results")
            file = case.get("classname") or suite.get("name")
            title_path = [t.strip() for t in (case.get("name") or "test").split(" › ")]
            status = "passed"
            errors: list[ResultError] = []
            for child in case:
                if child.tag in ("failure", "error"):
                    status = "failed"
                    text = (child.text or "").strip()
                    errors.append(ResultError(message=text or child.get("message") or child.tag))
                elif child.tag == "skipped":
                    status = "skipped"
            out_text = "\n".join((e.text or "") for e in case.iter("system-out"))
            err_text = "\n".join((e.text or "") for e in case.iter("system-err"))
            trace_path = None
            attachments: list[AttachmentRef] = []
            for path in _ATTACHMENT_LINE.findall(out_text + "\n" + err_text):
                path = path.strip()
                if path.endswith("trace.zip") and trace_path is None:
                    trace_path = path
                else:
                    ctype = "image/png" if path.endswith(".png") else "text/markdown" if path.endswith(".md") else ""
                    attachments.append(
                        AttachmentRef(path.rsplit("/", 1)[-1], ctype or "application/octet-stream", path)
                    )
            stdout = [line for line in _ATTACHMENT_LINE.sub("", out_text).splitlines() if line.strip()]
            try:
                seconds = float(case.get("time") or 0)
            except ValueError:
                seconds = 0.0
            info = TestResultInfo(
                project=project,
                file=file,
                title_path=title_path,
                status=status,
                duration_ms=round(seconds * 1000) if seconds >= 0 else None,
                errors=errors,
                stdout=stdout[:1000],
                stderr=[line for line in err_text.splitlines() if line.strip()][:1000],
            )
            key = "\x1f".join([project or "", file or "", *title_path])
            results.append(ReportedResult(info, key, None, trace_path, attachments))
    return Report(results, archive)
