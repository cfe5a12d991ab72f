"""Text with NUL characters, on both engines: PostgreSQL's text type cannot hold U+0000, so the store
keeps every NUL of a bound value as U+FFFD on either engine — the same rows, the same answers, never an
error (a NUL inside an event's payload survives: it is stored as JSON's `\\u0000` escape)."""

from __future__ import annotations

from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.live import IncomingEvent, LiveTraces
from molar_mcp.store.port import org_scope
from tests.store.factory import AddTrace, event


def test_nul_in_trace_and_event_text_is_kept_as_the_replacement_character(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    events = [
        event(0, "step.start", "s\x001", payload={"title": "pay\x00now"}),
        event(1, "console", "s\x001", message="boom\x00tail", payload={"raw": "a\x00b"}),
        event(2, "step.end", "s\x001", ok=False),
    ]
    trace_id, _ = add(
        scenario_slug="nul\x00slug", scenario_title="Title\x00x", failure_signature="sig\x00nature", events=events
    )
    with org_scope(LOCAL_ORG_ID):
        detail = store.get_trace(LOCAL_ORG_ID, trace_id)
        stored = store.list_events(LOCAL_ORG_ID, trace_id, limit=10).events
        found = store.list_traces(LOCAL_ORG_ID, TraceQuery(q="boom"))
        by_nul = store.list_traces(LOCAL_ORG_ID, TraceQuery(q="Title\x00x"))
    assert (detail.scenario_slug, detail.scenario_title, detail.failure_signature) == (
        "nul\ufffdslug",
        "Title\ufffdx",
        "sig\ufffdnature",
    )
    assert [e.step_id for e in stored] == ["s\ufffd1"] * 3
    assert stored[1].message == "boom\ufffdtail"
    assert stored[1].payload == {"raw": "a\x00b"}  # JSON text: the escape, not the character, is stored
    assert detail.steps[0].title == "pay\ufffdnow"  # the step table keeps text too
    assert [t.id for t in found.items] == [trace_id]
    assert [t.id for t in by_nul.items] == [trace_id]  # a query's NUL is read the same way


def test_a_live_append_with_nul_text_is_stored_not_refused_and_its_retry_is_a_duplicate(
    store: SqliteTraceStore,
) -> None:
    live = LiveTraces(store.db)
    line = IncomingEvent(0, Event.model_validate(event(0, "log", message="line\x00one")))
    with org_scope(LOCAL_ORG_ID):
        trace_id, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="live\x00trace")
        first = live.append_events(LOCAL_ORG_ID, trace_id, [line])
        retried = live.append_events(LOCAL_ORG_ID, trace_id, [line])  # the client did not hear the answer
        stored = store.list_events(LOCAL_ORG_ID, trace_id, limit=10).events
        detail = store.get_trace(LOCAL_ORG_ID, trace_id)
    assert (first.accepted, retried.accepted, retried.duplicates) == (1, 0, 1)
    assert [e.message for e in stored] == ["line\ufffdone"]
    assert detail.scenario_slug == "live\ufffdtrace"


def test_a_nul_in_a_step_id_names_one_step_across_batches_and_followers_get_the_stored_text(
    store: SqliteTraceStore,
) -> None:
    live = LiveTraces(store.db)
    batches = [
        [IncomingEvent(0, Event.model_validate(event(0, "step.start", "st\x00ep", message="open\x00")))],
        [IncomingEvent(0, Event.model_validate(event(1, "log", "st\x00ep", message="line")))],
    ]
    with org_scope(LOCAL_ORG_ID):
        trace_id, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="nul-steps")
        results = [live.append_events(LOCAL_ORG_ID, trace_id, batch) for batch in batches]
        detail = store.get_trace(LOCAL_ORG_ID, trace_id)
        stored = store.list_events(LOCAL_ORG_ID, trace_id, limit=10).events
    assert [(s.step_id, s.path, s.event_count) for s in detail.steps] == [("st\ufffdep", "1", 2)]
    published = [e for r in results for e in r.stored]  # what the live bus sends followers
    assert [e.model_dump() for e in published] == [e.model_dump() for e in stored]
    assert [e.message for e in published] == ["open\ufffd", "line"]
