"""The components' migrations on PostgreSQL: each embedded-store migration, in PostgreSQL's types
(`dialect.ddl`), except the few that differ by engine (full-text search), which are written here.

One list per component for both engines keeps the versions in step: a component that gains a migration
gains it on PostgreSQL at once, and the contract tests run it there.

Full-text search: SQLite's FTS5 table `traces_fts (rowid, body)` becomes a table with the same columns
and a generated `tsvector` (GIN-indexed). Both engines split words at every character that is not a
letter or a digit and ignore case and diacritics, so `billing` finds `/billing?upgraded=true` and `404`
finds `webhook-404` on either (`molar_fts_text` normalises stored text, `fts.py` the query the same way).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from molar_mcp.store.postgres import dialect
from molar_mcp.store.search import STATUS_PARTITIONS

# (component, index of the migration) → its PostgreSQL text, where translating the SQLite text won't do.
_FTS_TABLE = """
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE OR REPLACE FUNCTION molar_fts_text(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT regexp_replace(lower(public.unaccent('public.unaccent'::regdictionary, t)),
                                '[^[:alnum:]]+', ' ', 'g') $$;
CREATE TABLE traces_fts (
    rowid BIGINT PRIMARY KEY REFERENCES traces(pk) ON DELETE CASCADE,
    body TEXT NOT NULL DEFAULT '',
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, molar_fts_text(body))) STORED
);
CREATE INDEX traces_fts_tsv ON traces_fts USING gin (tsv);
"""
_VIRTUAL_FTS = re.compile(r"CREATE\s+VIRTUAL\s+TABLE\s+traces_fts\s+USING\s+fts5\s*\(.*?\)\s*;", re.S | re.I)

# Row-level security on `events` looked the trace up for every row (`_CHILD_FENCE`): 8–16 µs a row, so
# counting a 10,000-event trace's events took over 100 ms. Each event now carries its trace's org
# (`org_id`): the fence is a comparison. The org comes from the transaction's (`app.org_id`) by default,
# and from the trace when the transaction is unscoped (a trigger that only fires then).
# The foreign key to the trace checked each inserted row on its own (a third of a bundle's insert time):
# the same rules hold per statement instead, with the new rows as one table — every trace they hang off
# must be there under the org they carry, locked against deletion as a foreign key locks it (refused
# with SQLSTATE 23503, as a foreign key refuses); deleting traces deletes their events.
_EVENT_ORG = """
ALTER TABLE events ADD COLUMN org_id TEXT;
UPDATE events e SET org_id = t.org_id FROM traces t WHERE t.pk = e.trace_pk;
ALTER TABLE events ALTER COLUMN org_id SET NOT NULL,
    ALTER COLUMN org_id SET DEFAULT coalesce(nullif(current_setting('app.org_id', true), ''), '*'),
    DROP CONSTRAINT events_trace_pk_fkey;
CREATE FUNCTION molar_event_org() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.org_id := coalesce((SELECT t.org_id FROM traces t WHERE t.pk = NEW.trace_pk), '*');
    RETURN NEW;
END $$;
CREATE TRIGGER events_org_of_trace BEFORE INSERT ON events
    FOR EACH ROW WHEN (NEW.org_id = '*') EXECUTE FUNCTION molar_event_org();
CREATE FUNCTION molar_events_have_traces() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted BIGINT;
    found BIGINT;
BEGIN
    SELECT count(*) INTO wanted FROM (SELECT DISTINCT trace_pk, org_id FROM new_events) n;
    PERFORM 1 FROM traces t JOIN (SELECT DISTINCT trace_pk, org_id FROM new_events) n
        ON t.pk = n.trace_pk AND t.org_id = n.org_id FOR KEY SHARE OF t;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < wanted THEN
        RAISE EXCEPTION 'insert on table "events" violates its trace reference: no such trace in the org'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER events_have_traces AFTER INSERT ON events REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION molar_events_have_traces();
CREATE FUNCTION molar_traces_drop_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM events e USING old_traces o WHERE e.trace_pk = o.pk;
    RETURN NULL;
END $$;
CREATE TRIGGER traces_drop_events AFTER DELETE ON traces REFERENCING OLD TABLE AS old_traces
    FOR EACH STATEMENT EXECUTE FUNCTION molar_traces_drop_events();
DROP POLICY org_fence ON events;
CREATE POLICY org_fence ON events USING (current_setting('app.org_id', true) IN (org_id, '*'))
    WITH CHECK (current_setting('app.org_id', true) IN (org_id, '*'));
"""

# The check of `_EVENT_ORG` sorted the new rows twice (two DISTINCTs) per statement: a tenth of a bundle's
# insert time. Nearly every statement inserts the events of one trace (a bundle's chunk, a live batch): one
# pass (min/max, no sort) finds that, and one trace row is checked and locked; other statements go the
# general way, as before.
_EVENT_TRACE_CHECK = """
CREATE OR REPLACE FUNCTION molar_events_have_traces() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    low_pk BIGINT;
    high_pk BIGINT;
    low_org TEXT;
    high_org TEXT;
    wanted BIGINT;
    found BIGINT;
BEGIN
    SELECT min(trace_pk), max(trace_pk), min(org_id COLLATE "C"), max(org_id COLLATE "C")
        INTO low_pk, high_pk, low_org, high_org FROM new_events;
    IF low_pk IS NULL THEN
        RETURN NULL;
    END IF;
    IF low_pk = high_pk AND low_org = high_org THEN
        PERFORM 1 FROM traces t WHERE t.pk = low_pk AND t.org_id = low_org FOR KEY SHARE OF t;
        GET DIAGNOSTICS found = ROW_COUNT;
        wanted := 1;
    ELSE
        SELECT count(*) INTO wanted FROM (SELECT DISTINCT trace_pk, org_id FROM new_events) n;
        PERFORM 1 FROM traces t JOIN (SELECT DISTINCT trace_pk, org_id FROM new_events) n
            ON t.pk = n.trace_pk AND t.org_id = n.org_id FOR KEY SHARE OF t;
        GET DIAGNOSTICS found = ROW_COUNT;
    END IF;
    IF found < wanted THEN
        RAISE EXCEPTION 'insert on table "events" violates its trace reference: no such trace in the org'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
"""


# A search with a status filter asks the GIN index of that status's traces alone: a partial index per
# status (the embedded store keeps a text table per status, store/search.py `STATUS_PARTITIONS`). A word
# common in the store that the status's traces never hold is an empty list there. `traces_fts.status`
# follows the trace's: set from the trace when the text is inserted, updated when the trace's changes.
def _status_text() -> str:
    indexes = "\n".join(
        f"CREATE INDEX traces_fts_tsv_{status} ON traces_fts USING gin (tsv) WHERE status = '{status}';"
        for status in STATUS_PARTITIONS
    )
    return f"""
ALTER TABLE traces_fts ADD COLUMN status TEXT;
UPDATE traces_fts f SET status = t.status FROM traces t WHERE t.pk = f.rowid;
{indexes}
CREATE FUNCTION molar_fts_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.status := (SELECT t.status FROM traces t WHERE t.pk = NEW.rowid);
    RETURN NEW;
END $$;
CREATE TRIGGER traces_fts_status BEFORE INSERT ON traces_fts
    FOR EACH ROW EXECUTE FUNCTION molar_fts_status();
CREATE FUNCTION molar_trace_status_text() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE traces_fts SET status = NEW.status WHERE rowid = NEW.pk;
    RETURN NULL;
END $$;
CREATE TRIGGER traces_status_text AFTER UPDATE OF status ON traces
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION molar_trace_status_text();
ANALYZE traces_fts;
"""


_SPECIAL: dict[tuple[str, int], str] = {
    # traces 2 rebuilt the FTS5 index with other separators; PostgreSQL's index had them from the start.
    ("traces", 1): "SELECT 1",
    ("traces", 3): _EVENT_ORG,
}

# Migrations of PostgreSQL's own component "postgres" (as the embedded store has its own, "search"): what
# only this engine has, versioned apart so the embedded store's versions stay as they are.
PG_MIGRATIONS: tuple[str, ...] = (
    # 1: the trace check of inserted events in one pass.
    _EVENT_TRACE_CHECK,
    # 2: the text index of each status's traces (`_status_text`).
    _status_text(),
)

_SETUP = """
CREATE EXTENSION IF NOT EXISTS citext;
"""


def pg_migration(component: str, index: int, sqlite_text: str) -> str:
    if component == "postgres":  # written for PostgreSQL
        return sqlite_text
    special = _SPECIAL.get((component, index))
    if special is not None:
        return special
    text = sqlite_text
    if component == "traces" and index == 0:
        text = _VIRTUAL_FTS.sub("", text)
        return _SETUP + dialect.ddl(text) + _FTS_TABLE + _EVENT_STORAGE
    return dialect.ddl(text)


# Events are most of the data. Retention removes a trace's events by its key (the primary key's first
# column), and cold traces move their events out (tiers); autovacuum keeps up on this table sooner.
_EVENT_STORAGE = """
ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
"""

_FENCE = "current_setting('app.org_id', true) IN (org_id, '*')"
_CHILD_FENCE = (
    "current_setting('app.org_id', true) = '*' OR EXISTS (SELECT 1 FROM traces t WHERE t.pk = {table}.trace_pk)"
)


def secure_tables(conn: psycopg.Connection[Any]) -> None:
    """Row-level security on every table that holds an org's rows: those with an `org_id` column, and
    those hanging off a trace (`trace_pk`), which see only the rows of traces the org can see."""
    rows = conn.execute(
        """
        SELECT c.relname,
               bool_or(a.attname = 'org_id'),
               bool_or(a.attname = 'trace_pk')
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
        GROUP BY c.relname
        """
    ).fetchall()
    for table, has_org, has_trace in rows:
        if has_org:
            using = _FENCE
        elif has_trace:
            using = _CHILD_FENCE.format(table=table)
        else:
            continue
        conn.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
        conn.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
        conn.execute(f'CREATE POLICY org_fence ON "{table}" USING ({using}) WITH CHECK ({using})')
