"""The kind index leaves assertions out (traces migration 5: each stored event costs less): every kind
filter still gives what reading the whole trace and keeping the kind gives, on both engines; reads of
other kinds go by the index; a store made before the migration gets it when opened and answers the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.live import IncomingEvent, LiveTraces
from molar_mcp.store.schema import MIGRATIONS
from molar_mcp.store.sqlite import kinds_of_family
from tests.bundles import BASE_TS
from tests.store.factory import AddTrace, event, new_trace

FAMILIES = ("assertion", "network", "network.response", "log", "step", "Assertion", "llm", "tool")
PAGES = ((100, 0), (3, 0), (3, 4), (50, 40), (10, 500))


def _mixed_events() -> list[dict[str, Any]]:
    """Three steps, mostly assertions (a few failed), with requests, logs and an `assertion.soft` that the
    `assertion` family takes too."""
    events: list[dict[str, Any]] = []
    seq = 0
    for n in (1, 2, 3):
        sid = f"s{n}"
        events.append(event(seq, "step.start", sid, payload={"title": f"step {n}"}))
        seq += 1
        for i in range(40):
            kind = ("network.request", "network.response", "log")[i % 3] if i % 7 == 0 else "assertion"
            ok = False if (kind == "assertion" and i % 13 == 5) else None
            ev = event(seq, kind, sid, message=f"{kind} {i}")
            if ok is not None:
                ev["ok"] = ok
            events.append(ev)
            seq += 1
        events.append(event(seq, "assertion.soft", sid))
        seq += 1
        events.append(event(seq, "step.end", sid, ok=n != 3))
        seq += 1
    return events


def _expected(everything: list[Any], family: str, limit: int, offset: int, ok: bool | None = None) -> Any:
    kinds = set(kinds_of_family({e.kind for e in everything}, family))
    kept = [e for e in everything if e.kind in kinds and (ok is None or e.ok is ok)]
    return [e.seq for e in kept[offset : offset + limit]], len(kept)


def _answers(store: SqliteTraceStore, ref: str) -> dict[tuple[Any, ...], Any]:
    everything = store.list_events(LOCAL_ORG_ID, ref, limit=10_000).events
    out: dict[tuple[Any, ...], Any] = {}
    for family in FAMILIES:
        for limit, offset in PAGES:
            page = store.list_events(LOCAL_ORG_ID, ref, kind=family, limit=limit, offset=offset)
            out[(family, limit, offset)] = ([e.seq for e in page.events], page.total)
            assert out[(family, limit, offset)] == _expected(everything, family, limit, offset), (family, limit)
            assert page.events == [e for e in everything if e.seq in set(out[(family, limit, offset)][0])]
        for ok in (True, False):
            page = store.list_events(LOCAL_ORG_ID, ref, kind=family, ok=ok, limit=5, offset=1)
            out[(family, ok)] = ([e.seq for e in page.events], page.total)
            assert out[(family, ok)] == _expected(everything, family, 5, 1, ok), (family, ok)
        page = store.list_events(LOCAL_ORG_ID, ref, kind=family, step="2", limit=7, offset=2)
        in_step = [e for e in everything if e.step == 2]
        out[(family, "step 2")] = ([e.seq for e in page.events], page.total)
        assert out[(family, "step 2")] == _expected(in_step, family, 7, 2), family
    return out


def test_every_kind_filter_gives_what_reading_the_whole_trace_gives(store: SqliteTraceStore, add: AddTrace) -> None:
    _, short_id = add(events=_mixed_events())
    answers = _answers(store, short_id)
    assert answers[("assertion", 100, 0)][1] == 3 * (40 - 6 + 1)  # the soft ones are in the family
    assert answers[("network", 3, 4)] == ([44, 51, 65], 12)
    # Kinds appended live are counted and found the same way.
    live = LiveTraces(store.db)
    trace_id, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="agent-run")
    for seq, kind in enumerate(("assertion", "tool.call", "assertion", "assertion", "tool.result", "log")):
        live.append_events(LOCAL_ORG_ID, trace_id, [IncomingEvent(0, Event(seq=seq, ts=BASE_TS + seq, kind=kind))])
    appended = store.list_events(LOCAL_ORG_ID, trace_id, kind="assertion", limit=2, offset=1)
    assert ([e.seq for e in appended.events], appended.total) == ([2, 3], 3)
    tools = store.list_events(LOCAL_ORG_ID, trace_id, kind="tool")
    assert ([e.seq for e in tools.events], tools.total) == ([1, 4], 2)


def _plans(store: SqliteTraceStore, ref: str, **filters: Any) -> list[str]:
    """The query plans of the statements `list_events(ref, **filters)` runs (SQLite)."""
    statements: list[str] = []
    with store.db.read() as conn:
        conn.set_trace_callback(statements.append)
        try:
            store.list_events(LOCAL_ORG_ID, ref, **filters)
        finally:
            conn.set_trace_callback(None)
        events = [s for s in statements if "FROM events" in s]
        assert events
        return [" / ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {s}")) for s in events]


def test_the_kind_index_holds_no_assertions_and_reads_of_other_kinds_use_it(tmp_path: Path) -> None:
    store = SqliteTraceStore(tmp_path / "data")
    try:
        _, short_id = store.add_trace(LOCAL_ORG_ID, new_trace(_mixed_events()), {})
        with store.db.read() as conn:
            (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_kind'").fetchone()
            assert "WHERE kind <> 'assertion'" in sql
        for family in ("network", "log", "step"):
            assert all("events_kind" in p for p in _plans(store, short_id, kind=family)), family
        # Assertions: the page by the trace's key (dense), the total from the trace's row (no count query).
        plans = _plans(store, short_id, kind="assertion", limit=5)
        assert len(plans) == 1
        assert "events_kind" not in plans[0]
        assert all("events_failed" in p for p in _plans(store, short_id, kind="network", ok=False))
    finally:
        store.close()


def test_a_store_made_before_the_narrow_kind_index_gets_it_when_opened_and_answers_the_same(tmp_path: Path) -> None:
    store = SqliteTraceStore(tmp_path / "data")
    try:
        _, short_id = store.add_trace(LOCAL_ORG_ID, new_trace(_mixed_events()), {})
        with store.db.tx() as conn:  # back to traces version 4: the kind index of every event
            conn.execute("DROP INDEX events_kind")
            conn.execute("CREATE INDEX events_kind ON events(trace_pk, kind, seq)")
            conn.execute("UPDATE schema_versions SET version = 4 WHERE component = 'traces'")
        before = _answers(store, short_id)
    finally:
        store.close()
    store = SqliteTraceStore(tmp_path / "data")
    try:
        with store.db.read() as conn:
            version = conn.execute("SELECT version FROM schema_versions WHERE component = 'traces'").fetchone()
            assert version == (len(MIGRATIONS),) == (5,)
            (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_kind'").fetchone()
            assert "WHERE kind <> 'assertion'" in sql
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert _answers(store, short_id) == before
    finally:
        store.close()


@pytest.mark.parametrize("family", ["assertion", "network"])
def test_a_cold_trace_counts_its_events_as_before(store: SqliteTraceStore, add: AddTrace, family: str) -> None:
    """The total of a kind read comes from the trace's row only while the events are there (not cold)."""
    _, short_id = add(events=_mixed_events())
    with store.db.tx() as conn:
        conn.execute("UPDATE traces SET tier = 'cold' WHERE short_id = ?", (short_id,))
        conn.execute("DELETE FROM events WHERE trace_pk = (SELECT pk FROM traces WHERE short_id = ?)", (short_id,))
    page = store.list_events(LOCAL_ORG_ID, short_id, kind=family)
    assert (page.events, page.total) == ([], 0)
