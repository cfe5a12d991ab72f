"""Read a Molar bundle v1 (docs/bundle-format.md) into a `NewTrace` plus its blobs. Pure: no store.

`open_bundle` validates the summary and the blobs at once and leaves the events to be read while they
are stored: `NewTrace.event_chunks` decompresses, parses and validates events.ndjson a chunk of lines at
a time (`EVENT_CHUNK` lines, 512 KB at most), so memory holds one chunk of events, never the whole
trace. A bad line raises `BundleError` from inside the store's transaction, which then stores nothing
(`TraceStore.add_trace`).
`read_bundle` reads every event at once (for callers that want the whole trace as objects).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import posixpath
import tarfile
import threading
import types
import uuid
import zipfile
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from operator import attrgetter
from typing import IO, Annotated, Any, Literal, cast, get_args

import annotated_types
import msgspec
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import SchemaValidator, core_schema
from zlib_ng import zlib_ng
from zlib_ng.gzip_ng import GzipFile

from molar_mcp.models import TRACE_SOURCES, TRACE_STATUSES, ArtifactRef, Event
from molar_mcp.models.limits import loads_bounded
from molar_mcp.models.rows import EventView, trusted_event
from molar_mcp.store.port import EventChunk, EventFields, NewTrace

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
# Events validated (and then stored) per chunk: at most this many lines, and at most _CHUNK_BYTES of
# them. Big enough that validation is one call per chunk, small enough that memory holds one chunk of a
# million-event bundle and that one validation call (which holds the GIL) lasts a few milliseconds, so
# the server's other requests are not kept waiting.
EVENT_CHUNK = 2_000
_CHUNK_BYTES = 512 * 1024
_READ_BLOCK = 1 << 20
# The store keeps integers as SQLite's signed 64-bit; a larger one is refused here, before storing.
_MAX_INT = 2**63 - 1
# What reading a corrupt tar.gz raises: a corrupt deflate stream raises zlib-ng's error, no OSError.
_TAR_ERRORS: tuple[type[Exception], ...] = (
    tarfile.TarError,
    OSError,
    EOFError,
    zlib.error,
    cast(type[Exception], zlib_ng.error),
)
_STREAM_ERRORS: tuple[type[Exception], ...] = (*_TAR_ERRORS, zipfile.BadZipFile)  # events.ndjson of either archive


class BundleError(Exception):
    """Why a bundle was refused. `kind` is the error code the API reports (and maps to a status)."""

    def __init__(self, kind: BundleErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # pickled whole (an error of a bundle read in a child process)
        return type(self), (self.kind, self.message)


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
    events_read: int = 0  # of a streamed bundle: the events its chunks have yielded so far

    @property
    def event_count(self) -> int:
        """The trace's events: all of them once a streamed bundle has been stored."""
        if self.trace.events_stored is not None:
            return self.trace.events_stored
        return self.events_read if self.trace.event_chunks is not None else len(self.trace.events)


def read_bundle(
    data: bytes, overrides: Overrides | None = None, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
) -> ParsedBundle:
    """Parse and validate a bundle archive, every event read; raise `BundleError` naming the first problem."""
    parsed = open_bundle(data, overrides, max_bytes=max_bytes)
    chunks = parsed.trace.event_chunks
    parsed.trace.event_chunks = None
    parsed.trace.events = [_as_event(ev) for chunk in chunks or () for ev in chunk]
    return parsed


def _as_event(ev: Event | EventFields | EventView) -> Event:
    if isinstance(ev, Event):
        return ev
    if type(ev) is dict:
        return trusted_event(**ev)
    return trusted_event(ev.seq, ev.ts, ev.kind, ev.step_id, ev.step, ev.ok, ev.message, ev.payload)  # type: ignore[union-attr]


def open_bundle(
    data: bytes, overrides: Overrides | None = None, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
) -> ParsedBundle:
    """Parse and validate a bundle archive's summary and blobs (raise `BundleError` naming the first
    problem); its events are read, validated chunk by chunk, when `trace.event_chunks` is iterated."""
    if len(data) > max_bytes:
        raise BundleError("payload_too_large", f"bundle is {len(data)} bytes; the limit is {max_bytes} bytes")
    archive = _open_archive(data, max_expanded=max_bytes * _MAX_EXPANSION)
    files = archive.files
    root = _find_root(set(files) | archive.streamed)
    summary_raw = files.get(root + "summary.json")
    if summary_raw is None:
        raise BundleError("validation_error", "the bundle has no summary.json")
    if root + _EVENTS not in archive.streamed:
        raise BundleError("validation_error", "the bundle has no events.ndjson")
    summary = _read_summary(summary_raw)
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
    )
    parsed = ParsedBundle(trace=trace, blobs=blobs)
    trace.event_chunks = _event_chunks(archive, root + _EVENTS, parsed)
    return parsed


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


_EVENTS = "events.ndjson"


@dataclass
class _Archive:
    """An opened archive: every member read whole except the events (`streamed`: events.ndjson at the
    top or one folder down), which `open` reads as a stream while they are stored."""

    files: dict[str, bytes]
    streamed: set[str]
    open: Callable[[str], IO[bytes]]
    close: Callable[[], None]


def _is_events(name: str) -> bool:
    return name == _EVENTS or (name.endswith("/" + _EVENTS) and name.count("/") == 1)


def _open_archive(data: bytes, *, max_expanded: int) -> _Archive:
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        return _open_zip(data, max_expanded)
    if data[:2] == b"\x1f\x8b":
        return _open_tar(data, max_expanded)
    raise BundleError("unsupported_media_type", "the bundle is neither a zip nor a tar.gz archive")


def _safe_name(name: str) -> str:
    """Normalise an archive member name; refuse one that would escape the bundle."""
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise BundleError("unsafe_path", f"archive path {name!r} is absolute")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise BundleError("unsafe_path", f"archive path {name!r} escapes the bundle")
    return norm


def _open_zip(data: bytes, max_expanded: int) -> _Archive:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleError("bad_bundle", f"the zip archive is corrupt: {exc}") from exc
    if len(infos) > _MAX_MEMBERS:
        raise BundleError("payload_too_large", f"the bundle has {len(infos)} files; the limit is {_MAX_MEMBERS}")
    files: dict[str, bytes] = {}
    streamed: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = _safe_name(info.filename)
        if info.is_dir():
            continue
        # Symlinks in zips are marked by the unix mode in the high bits of external_attr.
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise BundleError("unsafe_path", f"archive path {info.filename!r} is a link")
        # The declared size counts: reading a member stops there (a larger stream fails its check).
        total += info.file_size
        if total > max_expanded:
            raise BundleError("payload_too_large", "the bundle expands past the size limit")
        if _is_events(name):
            streamed[name] = info
            continue
        try:
            files[name] = zf.read(info)
        # zlib.error is no OSError: a member whose deflate stream is corrupt raises it.
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, zlib.error) as exc:
            raise BundleError("bad_bundle", f"cannot read {info.filename!r}: {exc}") from exc

    def open_member(name: str) -> IO[bytes]:
        try:
            return zf.open(streamed[name])
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, zlib.error) as exc:
            raise BundleError("bad_bundle", f"cannot read {name!r}: {exc}") from exc

    return _Archive(files, set(streamed), open_member, zf.close)


def _open_tar(data: bytes, max_expanded: int) -> _Archive:
    files: dict[str, bytes] = {}
    streamed: dict[str, tarfile.TarInfo] = {}
    total = 0
    try:
        # Random access: the events member is skipped here and read from its offset later, so the archive
        # stays open past this function (`_Archive.close`, once the events are read). Decompressed by
        # zlib-ng (the same gzip, ~4× faster to skip past a member than the standard library's module).
        unpacked = GzipFile(fileobj=io.BytesIO(data), mode="rb")  # type: ignore[no-untyped-call]
        tf = tarfile.open(fileobj=unpacked, mode="r:")  # noqa: SIM115
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
            if _is_events(name):
                streamed[name] = member
                continue
            fh = tf.extractfile(member)
            if fh is None:
                raise BundleError("bad_bundle", f"cannot read {member.name!r}")
            files[name] = fh.read()
    except _TAR_ERRORS as exc:
        raise BundleError("bad_bundle", f"the tar.gz archive is corrupt: {exc}") from exc

    def open_member(name: str) -> IO[bytes]:
        member = streamed[name]
        try:
            if not member.issparse():
                # A stream of its own, read forward to the member's data (zlib-ng's reader cannot go back
                # once it has read past its first buffer), then that many bytes.
                fresh = GzipFile(fileobj=io.BytesIO(data), mode="rb")  # type: ignore[no-untyped-call]
                fresh.seek(member.offset_data)
                return cast(IO[bytes], _MemberData(fresh, member.size))
            # A sparse member (never written by a bundle's producers): the standard library's reader.
            whole = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")  # noqa: SIM115
            fh = whole.extractfile(whole.getmember(member.name))
        except _TAR_ERRORS as exc:
            raise BundleError("bad_bundle", f"the tar.gz archive is corrupt: {exc}") from exc
        if fh is None:
            raise BundleError("bad_bundle", f"cannot read {name!r}")
        return fh

    def close() -> None:
        tf.close()
        unpacked.close()

    return _Archive(files, set(streamed), open_member, close)


class _MemberData:
    """The `size` bytes of a tar member's data, read from a stream standing at its start."""

    def __init__(self, fh: GzipFile, size: int) -> None:
        self._fh, self._left = fh, size

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        data = self._fh.read(want)
        if not data:
            raise EOFError("the archive ends inside a member")
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _MemberData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _find_root(files: set[str]) -> str:
    if "summary.json" in files or _EVENTS in files:
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


def _event_fields_validator() -> SchemaValidator:
    """A list of events validated into their fields (`EventFields`: a dict each, every field of `Event`
    there, defaults filled in) by `Event`'s own field schemas: what validating into models accepts and
    gives, at ~30% less CPU per event (no model objects)."""
    model = Event.__pydantic_core_schema__
    if model["type"] != "model" or model["schema"]["type"] != "model-fields":
        raise RuntimeError("Event's schema is not a plain model")
    fields = {
        name: core_schema.typed_dict_field(field["schema"], required=field["schema"]["type"] != "default")
        for name, field in model["schema"]["fields"].items()
    }
    extra = model.get("config", {}).get("extra_fields_behavior")
    return SchemaValidator(core_schema.list_schema(core_schema.typed_dict_schema(fields, extra_behavior=extra)))


_EVENT_LIST = _event_fields_validator()


def _line_blocks(fh: IO[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """`(number of its first line, lines)` of each block read: every line, blank ones too, split as
    `bytes.splitlines` splits them (each keeps its line end)."""
    lineno = 1
    rest = b""
    while True:
        block = fh.read(_READ_BLOCK)
        if not block:
            break
        buf = rest + block
        # A line is complete once a later byte follows it; "\r" may be the first half of "\r\n".
        lines = buf.splitlines(keepends=True)
        rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        if lines:
            yield lineno, lines
            lineno += len(lines)
    if rest:
        yield lineno, [rest]


def _chunk_bounds(lines: list[bytes]) -> Iterator[tuple[int, int]]:
    """`(start, end)` of each chunk of `lines`: `EVENT_CHUNK` lines at most, and ended by the line that
    brings it to `_CHUNK_BYTES` (found by bisection over the running sizes: no loop over the lines here)."""
    sizes = list(accumulate(map(len, lines)))
    start, base = 0, 0
    while start < len(lines):
        end = min(start + EVENT_CHUNK, len(lines))
        full = bisect_left(sizes, base + _CHUNK_BYTES, start, end)
        if full < end:
            end = full + 1
        yield start, end
        base, start = sizes[end - 1], end


def _event_chunks(archive: _Archive, name: str, parsed: ParsedBundle) -> Iterator[Sequence[EventFields | EventView]]:
    """events.ndjson, validated `EVENT_CHUNK` events at a time; `BundleError` names the first bad line.
    A chunk of lines is first read as it is, in one call (the fast reader); only when that cannot take it
    (a blank line, a line it leaves to pydantic, a bad line) are its lines numbered and its blank lines
    dropped, and `_read_events` reads them."""
    try:
        fh = archive.open(name)
        with fh:
            last_seq = -1
            for first, block in _line_blocks(fh):
                for start, end in _chunk_bounds(block):
                    part = block[start:end]
                    fast = _fast_events(b"[" + b",".join(part) + b"]", len(part), last_seq)
                    events: Sequence[EventFields | EventView]
                    if fast is not None:
                        events = fast
                    else:
                        numbered = [(first + start + i, line) for i, line in enumerate(part) if line.strip()]
                        if not numbered:
                            continue
                        events = _read_events(numbered, last_seq)
                    last = events[-1]
                    last_seq = last["seq"] if isinstance(last, dict) else last.seq
                    parsed.events_read += len(events)
                    yield events
    except _STREAM_ERRORS as exc:
        raise BundleError("bad_bundle", f"cannot read {name!r}: {exc}") from exc
    finally:
        archive.close()


def _read_events(lines: list[tuple[int, bytes]], last_seq: int) -> Sequence[EventFields | EventView]:
    """A chunk of events, validated. The whole chunk is read in one call (the ingest hot path): by the fast
    reader (`_fast_events`) when it can, else by pydantic into each event's fields; only when that fails
    too is it read line by line, to name the line that is wrong."""
    chunk = b"[" + b",".join(line for _, line in lines) + b"]"
    fast = _fast_events(chunk, len(lines), last_seq)
    if fast is not None:
        return fast
    try:
        events: list[EventFields] | None = _EVENT_LIST.validate_json(chunk)
    except ValidationError:
        events = None
    # As many events as lines: a line holding two objects ("{…},{…}") is no NDJSON line.
    if events is not None and len(events) == len(lines) and _increasing(events, last_seq):
        return events
    return [ev.__dict__ for ev in _read_events_by_line(lines, last_seq)]


def _increasing(events: Sequence[Any], last_seq: int) -> bool:
    """Whether each event's seq is above the one before it (the first above `last_seq`) and seq and ts
    fit the store's integers. Events as fields (dicts) or as `_FastEvent`s."""
    previous = last_seq
    if events and type(events[0]) is dict:
        for ev in events:
            seq = ev["seq"]
            if seq > _MAX_INT or ev["ts"] > _MAX_INT or seq <= previous:
                return False
            previous = seq
        return True
    for ev in events:
        seq = ev.seq
        if seq > _MAX_INT or ev.ts > _MAX_INT or seq <= previous:
            return False
        previous = seq
    return True


# The fast reader: msgspec decodes a chunk straight into `_FastEvent`s, ~3× faster than pydantic validates
# it. It is a shortcut, never a second judge: it takes a chunk only when it can give exactly what validating
# into `Event` gives (the same values, field by field), and leaves every other chunk to pydantic, which then
# accepts or refuses it as before. msgspec is strict where pydantic is lax (`"5"` or `5.0` for an int,
# `"true"` or `1` for a bool, NaN and 1e400 in a payload): such chunks go to pydantic. What it would accept
# and pydantic refuses is guarded here: nesting (pydantic refuses JSON nested deeper than 200; msgspec
# has no such bound), so a line with more than `_FAST_DEPTH` opening brackets has its event's depth
# measured, and a deeper event sends the chunk to pydantic. tests/ingest/test_event_fields.py compares the
# two on every recorded event and on edge cases.
_FAST_DEPTH = 128
_NOT_OPENING = bytes(range(256)).translate(None, b"{[\n")


def _fast_event_type() -> type[msgspec.Struct]:
    """`Event`'s fields as a msgspec struct: the same names, types, bounds and defaults, read from the
    model itself (a field this cannot express fails here, at import, not at ingest)."""
    checks = Event.__pydantic_decorators__
    validators = (checks.validators, checks.field_validators, checks.root_validators, checks.model_validators)
    if Event.model_config.get("extra") != "forbid" or any(validators):
        raise RuntimeError("Event is no longer a plain model the fast reader can mirror")
    bounds = {annotated_types.Ge: "ge", annotated_types.Le: "le", annotated_types.MinLen: "min_length"}
    bounds[annotated_types.MaxLen] = "max_length"
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in Event.model_fields.items():
        meta = {}
        for item in info.metadata:
            if type(item) not in bounds:
                raise RuntimeError(f"Event.{name}: the fast reader cannot mirror {item!r}")
            key = bounds[type(item)]
            meta[key] = getattr(item, key)
        base, optional = info.annotation, False
        if isinstance(base, types.UnionType) and len(get_args(base)) == 2 and get_args(base)[1] is type(None):
            base, optional = get_args(base)[0], True
        if base not in (int, str, bool, dict[str, Any]):
            raise RuntimeError(f"Event.{name}: the fast reader cannot mirror {info.annotation!r}")
        kind: Any = Annotated[base, msgspec.Meta(**meta)] if meta else base
        if optional:
            kind = kind | None
        if info.default_factory is dict:
            fields.append((name, kind, msgspec.field(default_factory=dict)))
        elif info.is_required():
            fields.append((name, kind))
        elif info.default is None:
            fields.append((name, kind, None))
        else:
            raise RuntimeError(f"Event.{name}: the fast reader cannot mirror its default")
    return msgspec.defstruct("_FastEvent", fields, forbid_unknown_fields=True, gc=False)


_FastEvent = _fast_event_type()
# Whether the chunk this thread decodes last held a float in a payload (only then may msgspec's text of a
# payload differ from pydantic's: `_payload_texts`). Set by the decoder's hook, which makes each float as
# msgspec would: a finite one as `float` does, any other refused (the chunk then goes to pydantic).
_floats = threading.local()


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("Number out of range")
    _floats.seen = True
    return value


_FAST_EVENT_LIST: msgspec.json.Decoder[list[Any]] = msgspec.json.Decoder(list[_FastEvent], float_hook=_float)  # type: ignore[valid-type]


def _fast_events(chunk: bytes, lines: int, last_seq: int) -> EventChunk | None:
    """The chunk's events as `_FastEvent`s, with their payloads' stored text, or None: the chunk is left to
    pydantic (see above)."""
    _floats.seen = False
    try:
        events: list[Any] = _FAST_EVENT_LIST.decode(chunk)
    except (msgspec.MsgspecError, ValueError):  # invalid UTF-8 raises UnicodeDecodeError
        return None
    if len(events) != lines or not _increasing(events, last_seq):
        return None
    # Opening brackets per line (each line ends in "\n"; one that does not is counted with the next: more).
    per_line = list(map(len, chunk.translate(None, _NOT_OPENING).split(b"\n")))
    if max(per_line) > _FAST_DEPTH:
        if len(per_line) != lines + 1:  # a line ends in "\r" alone: which event is deep is not known
            return None
        for count, event in zip(per_line, events, strict=False):
            if count > _FAST_DEPTH and _deeper_than(event.payload, _FAST_DEPTH - 1):
                return None
    return EventChunk(events, _payload_texts(events, floats=_floats.seen))


# The payloads' stored text is what `pydantic_core.to_json` writes (store/sqlite.py `event_rows`). For what
# msgspec decodes from JSON (str, int, float, bool, None, lists and objects of them), msgspec's encoder
# writes the same bytes at half the CPU, but for one thing: a float with a positive exponent (pydantic
# `1e+16`, msgspec `1e16`). Such a float is written by msgspec as a digit, "e" and a digit, so a payload
# whose text holds that anywhere (in a string too: a hex id) is written by pydantic instead.
# tests/ingest/test_payload_texts.py compares the two on every code point and a million floats.
_ENCODE = msgspec.json.Encoder().encode
_PAYLOAD = attrgetter("payload")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _digit_e_digit(text: bytes) -> bool:
    """Whether `text` holds a digit, "e" and a digit (every digit made a 0, then one search: ~5× cheaper
    than a regular expression)."""
    return b"0e0" in text.translate(_DIGITS_AS_ZERO)


def _payload_texts(events: list[Any], *, floats: bool = True) -> list[str]:
    """Each event's payload as the store writes it: encoded by msgspec, or by pydantic where they may differ
    (with `floats`: the payloads may hold a float; the chunk's texts are then looked at in one search, and
    each only when that finds something)."""
    encoded = list(map(_ENCODE, map(_PAYLOAD, events)))
    texts = list(map(bytes.decode, encoded))
    if not floats or not _digit_e_digit(b"\n".join(encoded)):
        return texts
    to_json = pydantic_core.to_json
    return [
        to_json(event.payload).decode() if _digit_e_digit(raw) else text
        for event, raw, text in zip(events, encoded, texts, strict=True)
    ]


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest in `value` more than `limit` deep (`value` itself a container: depth 1)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if type(item) is dict else item
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False


def _read_events_by_line(lines: list[tuple[int, bytes]], last_seq: int) -> list[Event]:
    events: list[Event] = []
    for lineno, line in lines:
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
