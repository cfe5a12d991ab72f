"""Read a Molar bundle v1 (docs/bundle-format.md) into a `NewTrace` plus its blobs. Pure: no store.

Everything is validated before anything is stored, so a bad bundle stores nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import tarfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from molar_mcp.models import TRACE_SOURCES, TRACE_STATUSES, ArtifactRef, Event
from molar_mcp.models.limits import loads_bounded
from molar_mcp.store.port import NewTrace

BundleErrorKind = Literal[
    "unsupported_media_type",
    "bad_bundle",
    "unsafe_path",
    "payload_too_large",
    "validation_error",
    "unsupported_version",
]

DEFAULT_MAX_BUNDLE_BYTES = 25 * 1024 * 1024
# A bundle may expand; past this many times its packed limit it is treated as a zip bomb.
_MAX_EXPANSION = 8
_MAX_MEMBERS = 10_000
# The store keeps integers as SQLite's signed 64-bit; a larger one is refused here, before storing.
_MAX_INT = 2**63 - 1


class BundleError(Exception):
    """Why a bundle was refused. `kind` is the error code the API reports (and maps to a status)."""

    def __init__(self, kind: BundleErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class BundleSummary(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: str | None = None
    scenario_slug: str | None = Field(default=None, min_length=1, max_length=200)
    scenario_title: str | None = Field(default=None, max_length=500)
    scenario_id: str | None = None
    status: str = "failed"
    source: str | None = None
    code_sha: str | None = Field(default=None, max_length=64)
    pr_number: int | None = Field(default=None, ge=-_MAX_INT, le=_MAX_INT)
    failure_signature: str | None = Field(default=None, max_length=500)
    created_at: datetime | None = None
    duration_ms: int | None = Field(default=None, ge=0, le=_MAX_INT)
    artifacts: list[ArtifactRef] = Field(default_factory=list)


@dataclass
class Overrides:
    """Form fields of `POST /v1/traces/ingest` that override the summary."""

    scenario_slug: str | None = None
    source: str | None = None
    commit_sha: str | None = None
    pr_number: int | None = None


@dataclass
class ParsedBundle:
    trace: NewTrace
    blobs: dict[str, bytes] = field(default_factory=dict)


def read_bundle(
    data: bytes, overrides: Overrides | None = None, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
) -> ParsedBundle:
    """Parse and validate a bundle archive; raise `BundleError` naming the first problem."""
    if len(data) > max_bytes:
        raise BundleError("payload_too_large", f"bundle is {len(data)} bytes; the limit is {max_bytes} bytes")
    files = _unpack(data, max_expanded=max_bytes * _MAX_EXPANSION)
    root = _find_root(files)
    summary_raw = files.get(root + "summary.json")
    events_raw = files.get(root + "events.ndjson")
    if summary_raw is None:
        raise BundleError("validation_error", "the bundle has no summary.json")
    if events_raw is None:
        raise BundleError("validation_error", "the bundle has no events.ndjson")
    summary = _read_summary(summary_raw)
    events = _read_events(events_raw)
    blobs = _read_blobs(files, root)
    for artifact in summary.artifacts:
        if artifact.sha256 not in blobs:
            raise BundleError(
                "validation_error",
                f"summary.json names artifact {artifact.sha256} ({artifact.kind}) but blobs/ lacks it",
            )
    o = overrides or Overrides()
    slug = o.scenario_slug or summary.scenario_slug
    if not slug:
        raise BundleError("validation_error", "no scenario_slug: give it in summary.json or the form")
    source = o.source or summary.source
    if source is not None and source not in TRACE_SOURCES:
        raise BundleError("validation_error", f"source {source!r} is not one of {', '.join(TRACE_SOURCES)}")
    if summary.status not in TRACE_STATUSES:
        raise BundleError("validation_error", f"status {summary.status!r} is not one of {', '.join(TRACE_STATUSES)}")
    if o.pr_number is not None and not 0 <= o.pr_number <= _MAX_INT:
        raise BundleError("validation_error", f"pr_number {o.pr_number} is out of range")
    scenario_id = None
    if summary.scenario_id is not None:
        try:
            scenario_id = str(uuid.UUID(summary.scenario_id))
        except ValueError:
            raise BundleError(
                "validation_error", f"summary.json: scenario_id {summary.scenario_id!r} is not a UUID"
            ) from None
    artifacts = [a.model_copy(update={"size": len(blobs[a.sha256])}) for a in summary.artifacts]
    trace = NewTrace(
        scenario_slug=slug,
        scenario_title=summary.scenario_title or slug.replace("-", " ").capitalize(),
        scenario_id=scenario_id,
        status=summary.status,
        source=source,
        code_sha=o.commit_sha or summary.code_sha,
        pr_number=o.pr_number if o.pr_number is not None else summary.pr_number,
        failure_signature=summary.failure_signature,
        created_at=summary.created_at,
        duration_ms=summary.duration_ms,
        artifacts=artifacts,
        events=events,
    )
    return ParsedBundle(trace=trace, blobs=blobs)


def write_bundle(trace: NewTrace, blobs: dict[str, bytes]) -> bytes:
    """Pack a trace as a bundle (tar.gz) that `read_bundle` reads back to the same trace: summary.json,
    events.ndjson and blobs/<sha256>. Same input, same bytes (members sorted, times zero)."""
    summary: dict[str, Any] = {
        "format": "molar-bundle/1",
        "scenario_slug": trace.scenario_slug,
        "scenario_title": trace.scenario_title,
        "scenario_id": trace.scenario_id,
        "status": trace.status,
        "source": trace.source,
        "code_sha": trace.code_sha,
        "pr_number": trace.pr_number,
        "failure_signature": trace.failure_signature,
        "created_at": trace.created_at.isoformat() if trace.created_at else None,
        "duration_ms": trace.duration_ms,
        "artifacts": [a.model_dump(mode="json", exclude_none=True) for a in trace.artifacts],
    }
    lines = []
    for event in trace.events:  # None fields dropped; None inside a payload is data and stays
        doc = {k: v for k, v in event.model_dump(mode="json").items() if v is not None}
        lines.append(json.dumps(doc, ensure_ascii=False) + "\n")
    events = "".join(lines)
    members = {
        "summary.json": json.dumps({k: v for k, v in summary.items() if v is not None}, indent=1).encode(),
        "events.ndjson": events.encode(),
        **{f"blobs/{sha}": data for sha, data in sorted(blobs.items())},
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _unpack(data: bytes, *, max_expanded: int) -> dict[str, bytes]:
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        return _unpack_zip(data, max_expanded)
    if data[:2] == b"\x1f\x8b":
        return _unpack_tar(data, max_expanded)
    raise BundleError("unsupported_media_type", "the bundle is neither a zip nor a tar.gz archive")


def _safe_name(name: str) -> str:
    """Normalise an archive member name; refuse one that would escape the bundle."""
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise BundleError("unsafe_path", f"archive path {name!r} is absolute")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise BundleError("unsafe_path", f"archive path {name!r} escapes the bundle")
    return norm


def _unpack_zip(data: bytes, max_expanded: int) -> dict[str, bytes]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleError("bad_bundle", f"the zip archive is corrupt: {exc}") from exc
    if len(infos) > _MAX_MEMBERS:
        raise BundleError("payload_too_large", f"the bundle has {len(infos)} files; the limit is {_MAX_MEMBERS}")
    files: dict[str, bytes] = {}
    total = 0
    with zf:
        for info in infos:
            name = _safe_name(info.filename)
            if info.is_dir():
                continue
            # Symlinks in zips are marked by the unix mode in the high bits of external_attr.
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise BundleError("unsafe_path", f"archive path {info.filename!r} is a link")
            total += info.file_size
            if total > max_expanded:
                raise BundleError("payload_too_large", "the bundle expands past the size limit")
            try:
                files[name] = zf.read(info)
            # zlib.error is no OSError: a member whose deflate stream is corrupt raises it.
            except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, zlib.error) as exc:
                raise BundleError("bad_bundle", f"cannot read {info.filename!r}: {exc}") from exc
    return files


def _unpack_tar(data: bytes, max_expanded: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
            for count, member in enumerate(tf, start=1):
                if count > _MAX_MEMBERS:
                    raise BundleError("payload_too_large", f"the bundle has more than {_MAX_MEMBERS} files")
                name = _safe_name(member.name)
                if member.issym() or member.islnk():
                    raise BundleError("unsafe_path", f"archive path {member.name!r} is a link")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError("unsafe_path", f"archive path {member.name!r} is not a regular file")
                total += member.size
                if total > max_expanded:
                    raise BundleError("payload_too_large", "the bundle expands past the size limit")
                fh = tf.extractfile(member)
                if fh is None:
                    raise BundleError("bad_bundle", f"cannot read {member.name!r}")
                files[name] = fh.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError("bad_bundle", f"the tar.gz archive is corrupt: {exc}") from exc
    return files


def _find_root(files: dict[str, bytes]) -> str:
    if "summary.json" in files or "events.ndjson" in files:
        return ""
    tops = {name.split("/", 1)[0] for name in files if "/" in name}
    if len(tops) == 1:
        return tops.pop() + "/"
    return ""


def _read_summary(raw: bytes) -> BundleSummary:
    try:
        doc: Any = loads_bounded(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError("validation_error", f"summary.json is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError("validation_error", "summary.json must be a JSON object")
    try:
        return BundleSummary.model_validate(doc)
    except ValidationError as exc:
        raise BundleError("validation_error", f"summary.json: {_first_error(exc)}") from exc


_EVENT_LIST = TypeAdapter(list[Event])


def _read_events(raw: bytes) -> list[Event]:
    """Every event of events.ndjson, validated. The whole file is validated in one call (the ingest hot
    path); only when that fails is it read line by line, to name the line that is wrong."""
    lines = [line for line in raw.splitlines() if line.strip()]
    try:
        events = _EVENT_LIST.validate_json(b"[" + b",".join(lines) + b"]")
    except ValidationError:
        events = None
    if events is not None:
        last_seq = -1
        for ev in events:
            if ev.seq > _MAX_INT or ev.ts > _MAX_INT or ev.seq <= last_seq:
                break
            last_seq = ev.seq
        else:
            return events
    return _read_events_by_line(raw)


def _read_events_by_line(raw: bytes) -> list[Event]:
    events: list[Event] = []
    last_seq = -1
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ev = Event.model_validate_json(line)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise BundleError("validation_error", f"events.ndjson line {lineno} is not JSON") from exc
            raise BundleError("validation_error", f"events.ndjson line {lineno}: {_first_error(exc)}") from exc
        if ev.seq > _MAX_INT or ev.ts > _MAX_INT:
            raise BundleError("validation_error", f"events.ndjson line {lineno}: seq or ts is out of range")
        if ev.seq <= last_seq:
            raise BundleError(
                "validation_error",
                f"events.ndjson line {lineno}: seq {ev.seq} does not increase (previous was {last_seq})",
            )
        last_seq = ev.seq
        events.append(ev)
    return events


def _read_blobs(files: dict[str, bytes], root: str) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    prefix = root + "blobs/"
    for name, content in files.items():
        if not name.startswith(prefix):
            continue
        sha = name[len(prefix) :].lower()
        if "/" in sha or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise BundleError("validation_error", f"{name}: blob names must be a lowercase hex sha256")
        actual = hashlib.sha256(content).hexdigest()
        if actual != sha:
            raise BundleError("validation_error", f"{name}: content hashes to {actual}, not to its name")
        blobs[sha] = content
    return blobs


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"
