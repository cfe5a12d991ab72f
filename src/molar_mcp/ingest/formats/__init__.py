"""The formats `POST /v1/traces/ingest` and `molar-mcp ingest` read, and how one is told from another.

- `bundle`: a Molar bundle (zip or tar.gz with summary.json + events.ndjson), `ingest/bundle.py`;
- `playwright-trace`: a Playwright trace.zip (library, chunk, or Playwright Test's merged archive),
  `playwright_trace.py`;
- `playwright-report`: Playwright Test's JSON report, bare or zipped with test-results/, `playwright_report.py`;
- `junit`: JUnit XML, bare or zipped with the files its `[[ATTACHMENT|…]]` lines name, `playwright_report.py`;
- `playwright-result`: one Playwright Test result (the JSON of the `result` field) that came without a trace —
  a skipped test, a passing one with tracing off, a failure outside the browser (`ingest/results.py`).
"""

from __future__ import annotations

import io
import zipfile

from molar_mcp.ingest.bundle import BundleError

FORMATS: tuple[str, ...] = ("bundle", "playwright-trace", "playwright-report", "junit", "playwright-result")


def detect_format(data: bytes, filename: str | None = None) -> str:
    """The format of an upload, from its content (the file name only breaks ties). Raises `BundleError`."""
    label = filename or "the upload"
    head = data[:4]
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BundleError("bad_bundle", f"{label} is a corrupt or truncated zip archive: {exc}") from exc
        # Inside a trace, resources/ holds the page's own files (JSON, XML): they decide nothing.
        own = [n for n in names if not n.startswith("resources/") and "/resources/" not in n]
        base = [n.rsplit("/", 1)[-1] for n in own]
        if any(_is_report_name(n) for n in base):
            return "playwright-report"
        if any(n.endswith(".xml") for n in base):
            return "junit"
        if any(n.endswith(".trace") for n in base):
            return "playwright-trace"
        if "summary.json" in base or "events.ndjson" in base:
            return "bundle"
        raise BundleError(
            "validation_error",
            f"{label} is a zip archive but no format Molar reads: no .trace file (a Playwright trace), "
            "no summary.json (a Molar bundle), no report.json or JUnit XML",
        )
    if data[:2] == b"\x1f\x8b":
        return "bundle"
    text = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        if b'"suites"' in data[:1_000_000] or b'"config"' in data[:4096]:
            return "playwright-report"
        if b'"title_path"' in data[:1_000_000] and b'"status"' in data[:1_000_000]:
            return "playwright-result"
        raise BundleError("validation_error", f"{label} is JSON but not a Playwright JSON report (no `suites`)")
    if text.startswith(b"<"):
        if b"<testsuite" in data[:1_000_000]:
            return "junit"
        raise BundleError("validation_error", f"{label} is XML but not JUnit XML (no <testsuite>)")
    raise BundleError(
        "unsupported_media_type",
        f"{label} is none of the formats Molar reads: a Molar bundle (zip, tar.gz), a Playwright trace.zip, "
        "a Playwright report.json or JUnit XML",
    )


def _is_report_name(name: str) -> bool:
    return name.endswith(".json") and "report" in name.lower() and not name.endswith(".last-run.json")
