"""The detectors over stored rows (`StoredEvent`: columns, the payload parsed when read) say exactly what
they say over the same events as models, and leave the payloads no detector needs unread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from molar_mcp.debugger.detectors import analyze
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID, NewTrace, SqliteTraceStore
from tests.long_run import record_long_run

from .corpus import CASES


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    s = SqliteTraceStore(tmp_path / "data")
    yield s
    s.close()


def test_every_corpus_trace_gets_the_same_findings_from_stored_rows_as_from_models(store: SqliteTraceStore) -> None:
    for case in CASES:
        trace = NewTrace(scenario_slug=case.name, status=case.status or "failed", events=list(case.events))
        trace_id, _ = store.add_trace(LOCAL_ORG_ID, trace, {})
        models = store.list_events(LOCAL_ORG_ID, trace_id, limit=len(case.events)).events
        rows = store.stored_events(LOCAL_ORG_ID, trace_id)
        assert analyze(rows, case.status) == analyze(models, case.status), case.name


def test_a_long_run_is_judged_without_reading_the_payloads_of_its_passed_checks(store: SqliteTraceStore) -> None:
    _, trace_id = ingest_bundle(store, LOCAL_ORG_ID, record_long_run(2_000))
    rows = store.stored_events(LOCAL_ORG_ID, trace_id)
    findings = analyze(rows, "failed")
    models = store.list_events(LOCAL_ORG_ID, trace_id, limit=len(rows)).events
    assert findings == analyze(models, "failed")
    assert findings[0].label == "assertion_failed"
    passed = [r for r in rows if r.kind == "assertion" and r.ok is True]
    assert len(passed) > 1_500
    assert all(r._payload is None for r in passed)  # never parsed
