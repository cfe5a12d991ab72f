"""Ingest a Playwright JSON report or JUnit XML: one trace per test attempt, retries linked, bad files listed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from molar_mcp.ingest.bundle import BundleError, ParsedBundle
from molar_mcp.ingest.formats.playwright_report import Report, ReportedResult, read_json_report, read_junit
from molar_mcp.ingest.playwright import Attachment, read_playwright_trace, trace_from_result
from molar_mcp.store.port import TraceStore

if TYPE_CHECKING:
    from molar_mcp.ingest.service import IngestOutcome, OnStored, Upload

_EXPANSION = 10


def ingest_report(
    store: TraceStore, org_id: str, upload: Upload, fmt: str, outcome: IngestOutcome, on_stored: OnStored | None
) -> IngestOutcome:
    from molar_mcp.ingest.service import Rejected, StoredTrace

    label = upload.filename or ("report.json" if fmt == "playwright-report" else "junit.xml")
    reader = read_json_report if fmt == "playwright-report" else read_junit
    report = reader(upload.data, label=label, max_expanded=upload.max_bytes * _EXPANSION)
    if not report.results:
        raise BundleError("validation_error", f"{label} has no test results")
    previous: dict[str, str] = {}
    for reported in report.results:
        parsed, problem = _parse_one(report, reported, upload)
        if problem is not None:
            outcome.rejected.append(Rejected(*problem))
        prev = previous.get(reported.test_key)
        if prev is not None:
            for ev in parsed.trace.events:
                if ev.kind == "retry":
                    ev.payload["previous_trace_id"] = prev
        trace_id, short_id = store.add_trace(org_id, parsed.trace, parsed.blobs)
        previous[reported.test_key] = trace_id
        stored = StoredTrace(
            trace_id,
            short_id,
            parsed.trace.scenario_slug,
            parsed.trace.status,
            reported.trace_path,
            reported.result,
            parsed.event_count,
        )
        outcome.traces.append(stored)
        if on_stored is not None:
            on_stored(stored)
    return outcome


def _parse_one(
    report: Report, reported: ReportedResult, upload: Upload
) -> tuple[ParsedBundle, tuple[str, str, str] | None]:
    result = reported.result
    if reported.outcome == "flaky" and result.status == "passed":
        result = result.model_copy(update={"status": "flaky"})
    attachments: list[Attachment] = []
    for ref in reported.attachments:
        data = ref.body
        if data is None and ref.path:
            member = report.find(ref.path)
            if member is not None:
                data = report.archive.read(member) if report.archive else None
        if data is not None:
            attachments.append(Attachment(ref.name, ref.content_type, data))
    problem: tuple[str, str, str] | None = None
    if reported.trace_path and report.archive is not None:
        member = report.find(reported.trace_path)
        if member is None:
            problem = (reported.trace_path, "validation_error", "the report names this trace but the upload lacks it")
        else:
            try:
                return read_playwright_trace(
                    report.archive.read(member),
                    filename=member,
                    result=result,
                    attachments=attachments,
                    keep_secrets=upload.keep_secrets,
                    max_bytes=upload.max_bytes,
                ), None
            except BundleError as exc:
                problem = (member, exc.kind, exc.message)
    note = f"the trace {problem[0]} was not stored: {problem[2]}" if problem else None
    return trace_from_result(result, attachments=attachments, keep_secrets=upload.keep_secrets, note=note), problem
