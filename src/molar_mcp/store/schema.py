"""Migrations of the store's "traces" component (applied by `store/db.py`, version kept per component)."""

from __future__ import annotations

# Each entry moves the schema from version i to i+1. Never edit a shipped entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    # 1: traces, events, steps, artifacts, and a full-text index over what an agent searches for.
    """
    CREATE TABLE traces (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        short_id TEXT NOT NULL UNIQUE,
        org_id TEXT NOT NULL,
        scenario_id TEXT,
        scenario_slug TEXT,
        scenario_title TEXT,
        status TEXT NOT NULL,
        source TEXT,
        tier TEXT NOT NULL DEFAULT 'hot',
        pinned INTEGER NOT NULL DEFAULT 0,
        duration_ms INTEGER,
        code_sha TEXT,
        pr_number INTEGER,
        failure_signature TEXT,
        created_ms INTEGER NOT NULL,
        parent_trace_id TEXT,
        replay_from_step INTEGER,
        total_size_bytes INTEGER NOT NULL DEFAULT 0,
        blob_count INTEGER NOT NULL DEFAULT 0,
        event_count INTEGER NOT NULL DEFAULT 0,
        kind_counts TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX traces_org_created ON traces(org_id, created_ms DESC, pk DESC);
    CREATE INDEX traces_org_status_created ON traces(org_id, status, created_ms DESC, pk DESC);
    CREATE INDEX traces_org_signature ON traces(org_id, failure_signature, created_ms DESC);
    CREATE INDEX traces_org_scenario ON traces(org_id, scenario_id, created_ms DESC);

    CREATE TABLE events (
        trace_pk INTEGER NOT NULL REFERENCES traces(pk) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        kind TEXT NOT NULL,
        step_id TEXT,
        step INTEGER,
        ok INTEGER,
        message TEXT,
        payload TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (trace_pk, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_step ON events(trace_pk, step, seq);
    CREATE INDEX events_kind ON events(trace_pk, kind, seq);
    CREATE INDEX events_failed ON events(trace_pk, seq) WHERE ok = 0;

    CREATE TABLE steps (
        trace_pk INTEGER NOT NULL REFERENCES traces(pk) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        title TEXT,
        ok INTEGER,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        event_count INTEGER NOT NULL,
        PRIMARY KEY (trace_pk, step)
    ) WITHOUT ROWID;

    CREATE TABLE artifacts (
        trace_pk INTEGER NOT NULL REFERENCES traces(pk) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        kind TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        name TEXT,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (trace_pk, position)
    ) WITHOUT ROWID;

    CREATE VIRTUAL TABLE traces_fts USING fts5(
        body, tokenize = 'unicode61 remove_diacritics 2 tokenchars ''-_./'''
    );
    """,
    # 2: index words, not whole paths. With '-_./' as token characters, "/billing?upgraded=true"
    # held the token "/billing", so searching "billing" (or "404" in "webhook-404") found nothing.
    # The default separators split them; a query "webhook-404" is still found, as a phrase.
    # FTS5 stores its text, so the index is rebuilt from itself.
    """
    CREATE VIRTUAL TABLE traces_fts_v2 USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');
    INSERT INTO traces_fts_v2 (rowid, body) SELECT rowid, body FROM traces_fts;
    DROP TABLE traces_fts;
    ALTER TABLE traces_fts_v2 RENAME TO traces_fts;
    """,
    # 3: nested steps. A step has a parent, a depth and a path ("3.2"); `step` stays the number of
    # its top-level ancestor, so events keep one indexed step number and "step 3" keeps its meaning.
    # Steps are keyed by their id (unique in a trace) and listed by `ord`, the order they began.
    """
    CREATE TABLE steps_v2 (
        trace_pk INTEGER NOT NULL REFERENCES traces(pk) ON DELETE CASCADE,
        step_id TEXT NOT NULL,
        ord INTEGER NOT NULL,
        step INTEGER NOT NULL,
        path TEXT NOT NULL,
        parent_step_id TEXT,
        depth INTEGER NOT NULL DEFAULT 0,
        category TEXT,
        title TEXT,
        ok INTEGER,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        event_count INTEGER NOT NULL,
        start_ts INTEGER,
        end_ts INTEGER,
        PRIMARY KEY (trace_pk, step_id)
    ) WITHOUT ROWID;
    INSERT INTO steps_v2 (trace_pk, step_id, ord, step, path, parent_step_id, depth, category, title, ok,
                          first_seq, last_seq, event_count, start_ts, end_ts)
    SELECT s.trace_pk, s.step_id, s.step - 1, s.step, CAST(s.step AS TEXT), NULL, 0, NULL, s.title, s.ok,
           s.first_seq, s.last_seq, s.event_count,
           (SELECT e.ts FROM events e WHERE e.trace_pk = s.trace_pk AND e.seq = s.first_seq),
           (SELECT e.ts FROM events e WHERE e.trace_pk = s.trace_pk AND e.seq = s.last_seq)
    FROM steps s;
    DROP TABLE steps;
    ALTER TABLE steps_v2 RENAME TO steps;
    CREATE UNIQUE INDEX steps_order ON steps(trace_pk, ord);
    """,
    # 4: nothing in the embedded store (PostgreSQL: each event row carries its trace's org, so row-level
    # security checks a column instead of looking the trace up for every row; store/postgres/migrations.py).
    "SELECT 1",
    # 5: the kind index leaves out assertions. They are the bulk of a scenario run's events (each step's
    # checks: 99.8% of a 100,000-event run), an index of them saves a read little (a page of assertions is
    # dense among a trace's events, found by its primary key; their count is on the trace's row, and the
    # failed ones have `events_failed`), and keeping it cost each stored event about as much as the
    # other indexes together (bench/README.md, bench_bundle). A read of other kinds states the condition
    # (`kind <> 'assertion'`): only then may SQLite use a partial index.
    """
    DROP INDEX events_kind;
    CREATE INDEX events_kind ON events(trace_pk, kind, seq) WHERE kind <> 'assertion';
    """,
)
