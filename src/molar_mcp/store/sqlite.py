"""The embedded store: one SQLite file (WAL, FTS5) plus content-addressed blob files."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import string
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from molar_mcp.models import (
    ArtifactRef,
    Event,
    EventsResponse,
    StepSummary,
    TraceDetail,
    TraceListItem,
    TraceListResponse,
)
from molar_mcp.store.blobs import BlobStore
from molar_mcp.store.port import InvalidCursor, NewTrace, TraceNotFound, TraceQuery
from molar_mcp.store.schema import migrate

_SHORT_ALPHABET = string.ascii_letters + string.digits
# Event kinds whose text goes into the full-text index besides the trace's own fields.
_FTS_EVENT_KINDS = frozenset({"assertion", "error", "console", "step.start", "tool.result", "llm.response"})
_FTS_MAX_CHARS = 64_000
_SCENARIO_NS = uuid.UUID("6f1b7a52-4f0e-4a7e-9d7e-6d6f6c61722e")
# SQLite integers are signed 64-bit: a larger Python int raises OverflowError when bound.
_MAX_SQLITE_INT = 2**63 - 1

_TRACE_COLUMNS = (
    "pk, id, short_id, org_id, scenario_id, scenario_slug, scenario_title, status, source, tier, pinned, "
    "duration_ms, code_sha, pr_number, failure_signature, created_ms, parent_trace_id, replay_from_step, "
    "total_size_bytes, blob_count, event_count, kind_counts"
)


def scenario_id_for(slug: str) -> str:
    """The scenario UUID of a slug, when a producer gives none (stable across stores)."""
    return str(uuid.uuid5(_SCENARIO_NS, slug))


def _ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def derived_ok(ev: Event) -> bool | None:
    """`ok` when the producer left it out but the payload says: an HTTP status, a console level."""
    if ev.ok is not None:
        return ev.ok
    if ev.kind == "network.response":
        status = ev.payload.get("status")
        if isinstance(status, int):
            return status < 400
    if ev.kind == "console" and ev.payload.get("level") == "error":
        return False
    if ev.kind == "error":
        return False
    return None


def normalize_events(events: Sequence[Event]) -> list[Event]:
    """Number steps 1, 2, … in the order their `step_id` first appears (docs/bundle-format.md),
    and fill in `ok` where the payload decides it, so "failed events" is one indexed query."""
    numbers: dict[str, int] = {}
    out: list[Event] = []
    for ev in events:
        number = None if ev.step_id is None else numbers.setdefault(ev.step_id, len(numbers) + 1)
        ok = derived_ok(ev)
        out.append(
            ev if ev.step == number and ev.ok == ok else ev.model_copy(update={"step": number, "ok": ok})
        )
    return out


def _fts_ident(text: str) -> str:
    # A double quote would end the FTS5 string; NUL and other control characters end the query
    # text itself ("unterminated string"). None of them is ever part of a token.
    return "".join(" " if c == '"' or (ord(c) < 32 or ord(c) == 127) else c for c in text)


def fts_query(q: str) -> str:
    """Turn a user's free text into a safe FTS5 query: every word must match (prefix on the last)."""
    words = [w for w in (_fts_ident(part) for part in q.split()) if w.strip()]
    if not words:
        return ""
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " AND ".join(quoted)


class SqliteTraceStore:
    """`TraceStore` over SQLite. Thread-safe: one connection behind a lock (SQLite serialises anyway)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(data_dir / "blobs")
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            data_dir / "molar.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA busy_timeout = 5000")
        try:
            self.schema_version = migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    # ---- writes -------------------------------------------------------------------------------

    def add_trace(self, org_id: str, trace: NewTrace, blobs: dict[str, bytes]) -> tuple[str, str]:
        events = normalize_events(trace.events)
        # Check every blob before anything is written: a refused trace leaves no file behind.
        for sha, data in blobs.items():
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha:
                raise ValueError(f"blob named {sha} hashes to {actual}")
        created = trace.created_at or (_dt(events[0].ts) if events else datetime.now(UTC))
        duration = trace.duration_ms
        if duration is None and events:
            duration = max(0, events[-1].ts - events[0].ts)
        kind_counts = Counter(ev.kind for ev in events)
        trace_id = str(uuid.uuid4())
        total_size = sum(a.size for a in trace.artifacts)
        with self._tx() as conn:
            short_id = self._new_short_id(conn)
            cur = conn.execute(
                "INSERT INTO traces (id, short_id, org_id, scenario_id, scenario_slug, scenario_title,"
                " status,"
                " source, duration_ms, code_sha, pr_number, failure_signature, created_ms, parent_trace_id,"
                " replay_from_step, total_size_bytes, blob_count, event_count, kind_counts)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    trace_id,
                    short_id,
                    org_id,
                    trace.scenario_id or scenario_id_for(trace.scenario_slug),
                    trace.scenario_slug,
                    trace.scenario_title,
                    trace.status,
                    trace.source,
                    duration,
                    trace.code_sha,
                    trace.pr_number,
                    trace.failure_signature,
                    _ms(created),
                    trace.parent_trace_id,
                    trace.replay_from_step,
                    total_size,
                    len(trace.artifacts),
                    len(events),
                    json.dumps(dict(sorted(kind_counts.items()))),
                ),
            )
            pk = cur.lastrowid
            conn.executemany(
                "INSERT INTO events (trace_pk, seq, ts, kind, step_id, step, ok, message, payload)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        pk,
                        ev.seq,
                        ev.ts,
                        ev.kind,
                        ev.step_id,
                        ev.step,
                        None if ev.ok is None else int(ev.ok),
                        ev.message,
                        json.dumps(ev.payload, separators=(",", ":")) if ev.payload else "{}",
                    )
                    for ev in events
                ],
            )
            conn.executemany(
                "INSERT INTO steps (trace_pk, step, step_id, title, ok, first_seq, last_seq, event_count)"
                " VALUES (?,?,?,?,?,?,?,?)",
                [(pk, *row) for row in _summarise_steps(events)],
            )
            conn.executemany(
                "INSERT INTO artifacts (trace_pk, position, kind, sha256, name, content_type, size)"
                " VALUES (?,?,?,?,?,?,?)",
                [
                    (pk, i, a.kind, a.sha256, a.name, a.content_type, a.size)
                    for i, a in enumerate(trace.artifacts)
                ],
            )
            conn.execute("INSERT INTO traces_fts (rowid, body) VALUES (?, ?)", (pk, _fts_body(trace, events)))
            # Blobs last, inside the transaction: when a row fails to insert, no blob is written;
            # when a blob fails to write, the rows roll back. Blobs are content-addressed, so one
            # written by a transaction that then fails is harmless.
            for data in blobs.values():
                self.blobs.put(data)
        return trace_id, short_id

    def _new_short_id(self, conn: sqlite3.Connection) -> str:
        while True:
            candidate = "".join(secrets.choice(_SHORT_ALPHABET) for _ in range(9))
            if conn.execute("SELECT 1 FROM traces WHERE short_id = ?", (candidate,)).fetchone() is None:
                return candidate

    # ---- reads --------------------------------------------------------------------------------

    def list_traces(self, org_id: str, query: TraceQuery) -> TraceListResponse:
        where = ["t.org_id = ?"]
        args: list[Any] = [org_id]
        for column, value in (
            ("scenario_id", query.scenario_id),
            ("scenario_slug", query.scenario_slug),
            ("status", query.status),
            ("source", query.source),
            ("failure_signature", query.signature),
            ("tier", query.tier),
        ):
            if value is not None:
                where.append(f"t.{column} = ?")
                args.append(value)
        if query.code_sha is not None:
            # A short sha matches the full one it abbreviates, as git users expect.
            where.append("t.code_sha LIKE ? ESCAPE '\\'")
            args.append(_like_prefix(query.code_sha))
        if query.created_from is not None:
            where.append("t.created_ms >= ?")
            args.append(_ms(query.created_from))
        if query.created_to is not None:
            where.append("t.created_ms < ?")
            args.append(_ms(query.created_to))
        if query.q:
            match = fts_query(query.q)
            if match:
                where.append("t.pk IN (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?)")
                args.append(match)
        if query.cursor:
            created_ms, pk = _decode_cursor(query.cursor)
            where.append("(t.created_ms < ? OR (t.created_ms = ? AND t.pk < ?))")
            args.extend([created_ms, created_ms, pk])
        sql = (
            f"SELECT {_prefixed(_TRACE_COLUMNS, 't')} FROM traces t WHERE {' AND '.join(where)}"
            " ORDER BY t.created_ms DESC, t.pk DESC LIMIT ?"
        )
        args.append(query.limit + 1)
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        items = [_list_item(row) for row in rows]
        next_cursor = _encode_cursor(rows[-1][15], rows[-1][0]) if more and rows else None
        return TraceListResponse(items=items, next_cursor=next_cursor)

    def _find(self, conn: sqlite3.Connection, org_id: str, trace_ref: str) -> tuple[Any, ...]:
        column = "short_id"
        if _looks_like_uuid(trace_ref):
            column, trace_ref = "id", str(uuid.UUID(trace_ref))
        row = conn.execute(
            f"SELECT {_TRACE_COLUMNS} FROM traces WHERE {column} = ? AND org_id = ?", (trace_ref, org_id)
        ).fetchone()
        if row is None:
            raise TraceNotFound(trace_ref)
        return tuple(row)

    def get_trace(self, org_id: str, trace_ref: str) -> TraceDetail:
        with self._read() as conn:
            row = self._find(conn, org_id, trace_ref)
            pk = row[0]
            steps = conn.execute(
                "SELECT step, step_id, title, ok, first_seq, last_seq, event_count FROM steps"
                " WHERE trace_pk = ? ORDER BY step",
                (pk,),
            ).fetchall()
            artifacts = conn.execute(
                "SELECT kind, sha256, name, content_type, size FROM artifacts WHERE trace_pk = ?"
                " ORDER BY position",
                (pk,),
            ).fetchall()
        item = _list_item(row)
        created = item.created_at
        return TraceDetail(
            **item.model_dump(),
            org_id=row[3],
            s3_prefix=f"traces/runs/{row[3]}/{created:%Y/%m/%d}/{row[1]}/",
            pr_number=row[13],
            parent_trace_id=row[16],
            replay_from_step=row[17],
            total_size_bytes=row[18],
            blob_count=row[19],
            event_count=row[20],
            event_counts=json.loads(row[21]),
            steps=[
                StepSummary(
                    step=s[0],
                    step_id=s[1],
                    title=s[2],
                    ok=None if s[3] is None else bool(s[3]),
                    first_seq=s[4],
                    last_seq=s[5],
                    event_count=s[6],
                )
                for s in steps
            ],
            artifacts=[
                ArtifactRef(kind=a[0], sha256=a[1], name=a[2], content_type=a[3], size=a[4])
                for a in artifacts
            ],
        )

    def list_events(
        self,
        org_id: str,
        trace_ref: str,
        *,
        step: str | None = None,
        kind: str | None = None,
        ok: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> EventsResponse:
        where = ["trace_pk = ?"]
        with self._read() as conn:
            pk = self._find(conn, org_id, trace_ref)[0]
            args: list[Any] = [pk]
            if step is not None:
                # `step` is a step number ("7") or a step id ("checkout"); both may match.
                # ASCII only: "²".isdigit() is true yet int() refuses it; and a number past
                # SQLite's integer range can only name a step id.
                number = int(step) if step.isascii() and step.isdigit() else None
                if number is not None and number <= _MAX_SQLITE_INT:
                    where.append("(step = ? OR (step_id = ? AND step IS NOT NULL))")
                    args.extend([number, step])
                else:
                    where.append("step_id = ?")
                    args.append(step)
            if kind is not None:
                # `network` matches `network.request` and `network.response`: kinds are dotted families.
                where.append("(kind = ? OR kind LIKE ? ESCAPE '\\')")
                args.extend([kind, _like_prefix(kind + ".")])
            if ok is not None:
                where.append("ok = ?")
                args.append(int(ok))
            clause = " AND ".join(where)
            (total,) = conn.execute(f"SELECT count(*) FROM events WHERE {clause}", args).fetchone()
            rows = conn.execute(
                f"SELECT seq, ts, kind, step_id, step, ok, message, payload FROM events WHERE {clause}"
                " ORDER BY seq LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        events = [
            Event(
                seq=r[0],
                ts=r[1],
                kind=r[2],
                step_id=r[3],
                step=r[4],
                ok=None if r[5] is None else bool(r[5]),
                message=r[6],
                payload=json.loads(r[7]),
            )
            for r in rows
        ]
        return EventsResponse(events=events, total=total, offset=offset, limit=limit)


def _summarise_steps(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    steps: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.step is None or ev.step_id is None:
            continue
        s = steps.get(ev.step)
        if s is None:
            s = steps[ev.step] = {
                "step_id": ev.step_id,
                "title": None,
                "ok": None,
                "first": ev.seq,
                "last": ev.seq,
                "n": 0,
            }
        s["last"] = ev.seq
        s["n"] += 1
        if ev.kind == "step.start" and s["title"] is None:
            s["title"] = ev.message or ev.payload.get("title")
        elif ev.kind == "step.end" and ev.ok is not None:
            s["ok"] = ev.ok
        elif ev.ok is False and ev.kind in ("assertion", "error"):
            s["ok"] = False
    return [
        (
            n,
            s["step_id"],
            s["title"],
            None if s["ok"] is None else int(s["ok"]),
            s["first"],
            s["last"],
            s["n"],
        )
        for n, s in sorted(steps.items())
    ]


def _fts_body(trace: NewTrace, events: Sequence[Event]) -> str:
    parts = [
        trace.scenario_slug,
        trace.scenario_title or "",
        trace.failure_signature or "",
        trace.status,
        trace.code_sha or "",
    ]
    size = sum(len(p) for p in parts)
    for ev in events:
        if ev.message and (ev.kind in _FTS_EVENT_KINDS or ev.ok is False):
            if size + len(ev.message) > _FTS_MAX_CHARS:
                break
            parts.append(ev.message)
            size += len(ev.message)
    return "\n".join(parts)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _looks_like_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def _list_item(row: Sequence[Any]) -> TraceListItem:
    return TraceListItem(
        id=row[1],
        short_id=row[2],
        scenario_id=row[4],
        scenario_slug=row[5],
        scenario_title=row[6],
        status=row[7],
        source=row[8],
        tier=row[9],
        pinned=bool(row[10]),
        duration_ms=row[11],
        code_sha=row[12],
        failure_signature=row[14],
        created_at=_dt(row[15]),
    )


def _encode_cursor(created_ms: int, pk: int) -> str:
    raw = json.dumps([created_ms, pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_ms, pk = json.loads(raw)
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and -_MAX_SQLITE_INT <= v <= _MAX_SQLITE_INT
            for v in (created_ms, pk)
        ):
            raise ValueError("cursor fields are not integers SQLite can hold")
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this server issued; start again without it") from exc
    return created_ms, pk
