"""Pins and shares in the embedded store (component "sharing": pin/unpin and share).

- Pinning sets the trace row's own `pinned` flag (retention never moves a pinned trace down a tier).
- `shares` holds at most one share per trace: sharing again replaces its visibility and expiry (and
  lifts a revocation); revoking keeps the row, marked, so the link says it was revoked (410).

Every call takes an org and finds the trace in that org only (`find_trace_pk`), except
`get_share_by_short_id`: the public viewer (`GET /r/{short_id}`) has no org to scope by. There the
short id of a *shared* trace is the capability: 9 random characters of 62 (about 53 bits, from
`secrets`), and only a trace someone chose to share is found. The caller still checks the share's
visibility (org-only needs a session of that org) and its expiry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from molar_mcp.models.sharing import MAX_SHARE_DAYS, SHARE_VISIBILITIES, ShareVisibility
from molar_mcp.store.db import Database
from molar_mcp.store.sqlite import find_trace_pk

SHARING_MIGRATIONS: tuple[str, ...] = (
    # 1: one share per trace.
    """
    CREATE TABLE shares (
        trace_pk INTEGER PRIMARY KEY REFERENCES traces(pk) ON DELETE CASCADE,
        visibility TEXT NOT NULL CHECK (visibility IN ('org-only', 'public-read')),
        expires_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    """,
    # 2: a revoked share: its link answers 410 until the trace is shared again.
    """
    ALTER TABLE shares ADD COLUMN revoked_ms INTEGER;
    """,
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Share(NamedTuple):
    short_id: str
    visibility: ShareVisibility
    expires_at: datetime


class SharedTrace(NamedTuple):
    """A share found by its short id, with the org it belongs to (the caller checks visibility and expiry)."""

    org_id: str
    trace_id: str
    visibility: ShareVisibility
    expires_at: datetime
    revoked_at: datetime | None = None


def _visibility(raw: str) -> ShareVisibility:
    if raw == "public-read":
        return "public-read"
    return "org-only"  # the CHECK constraint allows nothing else; the stricter one is the safe reading


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class SqliteSharingStore:
    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock
        db.migrate("sharing", SHARING_MIGRATIONS)

    def now(self) -> datetime:
        """The store's time: what shares expire by (injectable, so tests need no sleeps)."""
        return self.clock()

    def pin(self, org_id: str, trace_ref: str, pinned: bool) -> bool:
        """Pin or unpin a trace of `org_id` (idempotent); return the new state. `TraceNotFound` otherwise."""
        with self.db.tx() as conn:
            pk, _ = find_trace_pk(conn, org_id, trace_ref)
            conn.execute("UPDATE traces SET pinned = ? WHERE pk = ?", (int(pinned), pk))
        return pinned

    def share(
        self,
        org_id: str,
        trace_ref: str,
        visibility: ShareVisibility,
        expires_days: int,
        *,
        now: datetime | None = None,
    ) -> Share:
        """Share a trace of `org_id` for `expires_days` (1–365) from `now`, replacing an earlier share.

        The link is the trace's short id: sharing again renews the same link."""
        if visibility not in SHARE_VISIBILITIES:
            raise ValueError(f"visibility must be one of {', '.join(SHARE_VISIBILITIES)}")
        if not 1 <= expires_days <= MAX_SHARE_DAYS:
            raise ValueError(f"expires_days must be between 1 and {MAX_SHARE_DAYS}")
        # Whole seconds: the expiry is shown and compared as an ISO time without fractions.
        start = (now or self.clock()).astimezone(UTC).replace(microsecond=0)
        expires = start + timedelta(days=expires_days)
        with self.db.tx() as conn:
            pk, _ = find_trace_pk(conn, org_id, trace_ref)
            conn.execute(
                "INSERT INTO shares (trace_pk, visibility, expires_ms, created_ms) VALUES (?,?,?,?)"
                " ON CONFLICT(trace_pk) DO UPDATE SET visibility = excluded.visibility,"
                " expires_ms = excluded.expires_ms, created_ms = excluded.created_ms, revoked_ms = NULL",
                (pk, visibility, _ms(expires), _ms(start)),
            )
            (short_id,) = conn.execute("SELECT short_id FROM traces WHERE pk = ?", (pk,)).fetchone()
        return Share(str(short_id), visibility, expires)

    def revoke(self, org_id: str, trace_ref: str, *, now: datetime | None = None) -> bool:
        """Revoke the share of a trace of `org_id` (its link answers 410 from now on); True when a live
        share was revoked, False when there was none (idempotent). `TraceNotFound` otherwise."""
        with self.db.tx() as conn:
            pk, _ = find_trace_pk(conn, org_id, trace_ref)
            cur = conn.execute(
                "UPDATE shares SET revoked_ms = ? WHERE trace_pk = ? AND revoked_ms IS NULL",
                (_ms(now or self.clock()), pk),
            )
            return bool(cur.rowcount)

    def get_share_by_short_id(self, short_id: str) -> SharedTrace | None:
        """The share of the trace with `short_id`, in whatever org (see the module docstring: the short
        id of a shared trace is the capability); `None` when no such trace or it was never shared."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT t.org_id, t.id, s.visibility, s.expires_ms, s.revoked_ms FROM shares s"
                " JOIN traces t ON t.pk = s.trace_pk WHERE t.short_id = ?",
                (short_id,),
            ).fetchone()
        if row is None:
            return None
        revoked = None if row[4] is None else _dt(int(row[4]))
        return SharedTrace(str(row[0]), str(row[1]), _visibility(str(row[2])), _dt(int(row[3])), revoked)
