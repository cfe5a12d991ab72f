"""The ingest service: an upload's bytes in, stored traces out (validated first, each stored atomically)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from molar_mcp.ingest.bundle import DEFAULT_MAX_BUNDLE_BYTES, BundleError, Overrides, ParsedBundle, open_bundle
from molar_mcp.ingest.formats import FORMATS, detect_format
from molar_mcp.ingest.playwright import Attachment, read_playwright_trace, trace_from_result
from molar_mcp.ingest.results import TestResultInfo
from molar_mcp.store.port import TraceStore


def ingest_bundle(
    store: TraceStore,
    org_id: str,
    data: bytes,
    overrides: Overrides | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
) -> tuple[str, str]:
    """Store one bundle, its events parsed while they are stored; return `(trace_id, short_id)`. Raises
    `BundleError` and stores nothing."""
    parsed = open_bundle(data, overrides, max_bytes=max_bytes)
    return store.add_trace(org_id, parsed.trace, parsed.blobs)


@dataclass
class Upload:
    """One ingest request: the file and everything that came with it."""

    data: bytes
    filename: str | None = None
    format: str | None = None
    overrides: Overrides = field(default_factory=Overrides)
    result: TestResultInfo | None = None
    attachments: list[Attachment] = field(default_factory=list)
    keep_secrets: bool = False
    max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES


@dataclass
class StoredTrace:
    trace_id: str
    short_id: str
    scenario_slug: str
    status: str
    name: str | None = None
    result: TestResultInfo | None = None
    event_count: int = 0


@dataclass
class Rejected:
    name: str
    error: str
    message: str


@dataclass
class IngestOutcome:
    format: str
    traces: list[StoredTrace] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    run_id: str | None = None


# Called after each stored trace (runs link it and notify their subscribers).
OnStored = Callable[[StoredTrace], None]


def parse_single(upload: Upload, fmt: str) -> ParsedBundle:
    """A bundle, a trace.zip or a test result without a trace, parsed and validated (nothing stored; a
    bundle's events are read and validated while they are stored: `ParsedBundle.event_count` after)."""
    if fmt == "playwright-result":
        return trace_from_result(
            _result_file(upload),
            attachments=upload.attachments,
            overrides=upload.overrides,
            keep_secrets=upload.keep_secrets,
        )
    if fmt == "bundle":
        parsed = open_bundle(upload.data, upload.overrides, max_bytes=upload.max_bytes)
        if upload.result is not None and not upload.overrides.scenario_slug:
            parsed.trace.scenario_slug = upload.result.scenario_slug()
        return parsed
    return read_playwright_trace(
        upload.data,
        filename=upload.filename,
        result=upload.result,
        overrides=upload.overrides,
        attachments=upload.attachments,
        keep_secrets=upload.keep_secrets,
        max_bytes=upload.max_bytes,
    )


def ingest_upload(store: TraceStore, org_id: str, upload: Upload, on_stored: OnStored | None = None) -> IngestOutcome:
    """Store what an upload holds. A single trace or bundle is all or nothing (`BundleError`); a report
    stores every result it can and lists the ones it cannot (nothing stored at all is an error)."""
    if upload.format is not None and upload.format not in FORMATS:
        raise BundleError("validation_error", f"format {upload.format!r} is not one of {', '.join(FORMATS)}")
    if len(upload.data) > upload.max_bytes:
        raise BundleError(
            "payload_too_large", f"the upload is {len(upload.data)} bytes; the limit is {upload.max_bytes} bytes"
        )
    fmt = upload.format or detect_format(upload.data, upload.filename)
    outcome = IngestOutcome(format=fmt)
    if fmt in ("bundle", "playwright-trace", "playwright-result"):
        parsed = parse_single(upload, fmt)
        trace_id, short_id = store.add_trace(org_id, parsed.trace, parsed.blobs)
        stored = StoredTrace(
            trace_id,
            short_id,
            parsed.trace.scenario_slug,
            parsed.trace.status,
            upload.filename,
            upload.result,
            parsed.event_count,
        )
        outcome.traces.append(stored)
        if on_stored is not None:
            on_stored(stored)
        return outcome
    from molar_mcp.ingest.reports import ingest_report

    return ingest_report(store, org_id, upload, fmt, outcome, on_stored)


def _result_file(upload: Upload) -> TestResultInfo:
    """The result a `playwright-result` file holds (validated; a `result` field sent beside it wins)."""
    label = upload.filename or "result.json"
    try:
        from_file = TestResultInfo.model_validate_json(upload.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "value"
        raise BundleError("validation_error", f"{label} is no Playwright Test result: {where}: {err['msg']}") from None
    return upload.result or from_file
