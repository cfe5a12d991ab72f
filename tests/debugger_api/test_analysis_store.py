"""The "debugger" store component: analyses, incidents clustered by org + cause (the signature without its
step), org isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from molar_mcp.models import AnalysisFinding, SuggestedReplay
from molar_mcp.store import InvalidCursor, SqliteTraceStore, TraceNotFound, TraceQuery
from molar_mcp.store.analysis import KEEP, IncidentNotFound, SqliteAnalysisStore
from tests.store.factory import minutes, new_trace

ORG = "org_a"
OTHER = "org_b"
SIG = "step-5: http 404 POST /api/webhooks/stripe"


def finding(signature: str = SIG, label: str = "http_error", step: int = 5, seq: int = 18) -> AnalysisFinding:
    return AnalysisFinding(
        label=label,
        confidence=0.85,
        critical_step=step,
        critical_seq=seq,
        evidence_seqs=[17, seq, 28],
        summary=f"{label} at step {step}.",
        signature=signature,
    )


def save(
    analyses: SqliteAnalysisStore,
    trace_id: str,
    signature: str | None = SIG,
    *,
    org: str = ORG,
    version: str = "1",
    now: datetime | None = None,
) -> None:
    subject, _ = analyses.reusable(org, trace_id, version)
    findings = [finding(signature)] if signature else []
    analyses.save_analysis(
        org,
        subject,
        analyzer_version=version,
        findings=findings,
        signature=signature,
        suggested_replay=SuggestedReplay(from_step=5, reason="fix it") if signature else None,
        now=now,
    )


def test_a_saved_analysis_reads_back_with_its_findings_signature_and_replay(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    trace_id, short_id = store.add_trace(ORG, new_trace(), {})
    assert analyses.get_analysis(ORG, trace_id) is None
    save(analyses, trace_id)
    got = analyses.get_analysis(ORG, short_id)
    assert got is not None
    assert got.trace_id == trace_id
    assert got.findings == [finding()]
    assert got.failure_signature == SIG
    assert got.suggested_replay == SuggestedReplay(from_step=5, reason="fix it")
    assert got.incident_id is not None


def test_the_analysis_signature_becomes_the_traces_only_when_it_had_none(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    unnamed, _ = store.add_trace(ORG, new_trace(failure_signature=None), {})
    named, _ = store.add_trace(ORG, new_trace(failure_signature="webhook-404"), {})
    save(analyses, unnamed)
    save(analyses, named)
    assert store.get_trace(ORG, unnamed).failure_signature == SIG
    assert store.get_trace(ORG, named).failure_signature == "webhook-404"
    # Filterable and searchable like a signature given at ingest.
    assert [t.id for t in store.list_traces(ORG, TraceQuery(signature=SIG)).items] == [unnamed]
    assert unnamed in [t.id for t in store.list_traces(ORG, TraceQuery(q="webhooks stripe")).items]


def test_failures_with_one_signature_cluster_into_one_incident_counted_once_per_trace(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    first, _ = store.add_trace(ORG, new_trace(created_at=minutes(0)), {})
    second, _ = store.add_trace(ORG, new_trace(created_at=minutes(30)), {})
    other, _ = store.add_trace(ORG, new_trace(created_at=minutes(10)), {})
    save(analyses, second)
    save(analyses, first)
    save(analyses, first)  # analysed again: still one trace of the incident
    save(analyses, other, "step-7: assertion url")
    page = analyses.list_incidents(ORG)
    assert page.org_id == ORG
    assert [i.signature for i in page.items] == [SIG, "step-7: assertion url"]  # last seen first
    webhook = page.items[0]
    assert webhook.trace_count == 2
    assert webhook.status == "open"
    assert webhook.first_seen_at == minutes(0)
    assert webhook.last_seen_at == minutes(30)
    assert webhook.last_trace_id == second
    assert webhook.label == "http_error"
    analysis = analyses.get_analysis(ORG, first)
    assert analysis is not None
    assert analysis.incident_id == webhook.id


def test_one_cause_in_several_tests_at_different_steps_and_commits_is_one_incident(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    """Incidents group by cause across runs AND tests: the signature without its step. Each says
    which tests it struck (the latest first), at which commits (first seen first), and how many."""
    runs = [
        ("checkout-pays", "c0ffee1", "step-5: http 500 POST /api/checkout", 0),
        ("checkout-pays", "c0ffee2", "step-5: http 500 POST /api/checkout", 10),
        ("gift-card-pays", "c0ffee2", "step-3: http 500 POST /api/checkout", 20),
        ("refund-flow", "c0ffee3", "step-8: http 500 POST /api/checkout", 30),
        ("refund-flow", "c0ffee3", "step-2: http 404 GET /api/refunds", 40),
    ]
    for slug, sha, signature, at in runs:
        trace_id, _ = store.add_trace(
            ORG, new_trace(scenario_slug=slug, code_sha=sha, failure_signature=None, created_at=minutes(at)), {}
        )
        save(analyses, trace_id, signature)
    refunds, checkout = analyses.list_incidents(ORG).items  # last seen first
    assert checkout.signature == "step-5: http 500 POST /api/checkout"  # the first failure's
    assert checkout.trace_count == 4
    assert (checkout.first_seen_at, checkout.last_seen_at) == (minutes(0), minutes(30))
    assert checkout.test_count == 3
    assert checkout.tests == ["refund-flow", "gift-card-pays", "checkout-pays"]
    assert checkout.commit_count == 3
    assert checkout.commits == ["c0ffee1", "c0ffee2", "c0ffee3"]
    assert (checkout.first_commit, checkout.last_commit) == ("c0ffee1", "c0ffee3")
    assert (refunds.trace_count, refunds.tests, refunds.commits) == (1, ["refund-flow"], ["c0ffee3"])
    assert analyses.get_incident(ORG, checkout.id) == checkout


def test_a_passed_run_makes_no_incident(store: SqliteTraceStore, analyses: SqliteAnalysisStore) -> None:
    trace_id, _ = store.add_trace(ORG, new_trace(status="passed", failure_signature=None), {})
    save(analyses, trace_id)
    assert analyses.list_incidents(ORG).items == []
    analysis = analyses.get_analysis(ORG, trace_id)
    assert analysis is not None
    assert analysis.incident_id is None


def test_a_trace_whose_signature_changes_moves_to_the_other_incident(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    trace_id, _ = store.add_trace(ORG, new_trace(), {})
    save(analyses, trace_id, version="1")
    save(analyses, trace_id, "step-5: http 404 POST /api/webhooks", version="2")
    counts = {i.signature: i.trace_count for i in analyses.list_incidents(ORG).items}
    assert counts == {SIG: 0, "step-5: http 404 POST /api/webhooks": 1}


def test_a_stored_analysis_is_reusable_only_for_the_same_facts_and_analyzer(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    trace_id, _ = store.add_trace(ORG, new_trace(), {})
    subject, stored = analyses.reusable(ORG, trace_id, "1")
    assert stored is None
    assert (subject.status, subject.event_count, subject.last_seq) == ("failed", 30, 29)
    save(analyses, trace_id, version="1")
    assert analyses.reusable(ORG, trace_id, "1")[1] is not None
    assert analyses.reusable(ORG, trace_id, "2")[1] is None


def test_another_org_sees_no_analysis_and_no_incident(store: SqliteTraceStore, analyses: SqliteAnalysisStore) -> None:
    trace_id, _ = store.add_trace(ORG, new_trace(), {})
    save(analyses, trace_id)
    incident = analyses.list_incidents(ORG).items[0]
    with pytest.raises(TraceNotFound):
        analyses.get_analysis(OTHER, trace_id)
    with pytest.raises(TraceNotFound):
        analyses.reusable(OTHER, trace_id, "1")
    assert analyses.list_incidents(OTHER).items == []
    with pytest.raises(IncidentNotFound):
        analyses.get_incident(OTHER, incident.id)
    with pytest.raises(IncidentNotFound):
        analyses.update_incident(OTHER, incident.id, status="muted")
    assert analyses.get_incident(ORG, incident.id).status == "open"


def test_the_same_signature_in_two_orgs_is_two_incidents(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    ours, _ = store.add_trace(ORG, new_trace(), {})
    theirs, _ = store.add_trace(OTHER, new_trace(), {})
    save(analyses, ours)
    save(analyses, theirs, org=OTHER)
    (a,) = analyses.list_incidents(ORG).items
    (b,) = analyses.list_incidents(OTHER).items
    assert a.id != b.id
    assert a.trace_count == b.trace_count == 1


def test_update_sets_status_and_owner_and_clears_the_owner_with_none(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    trace_id, _ = store.add_trace(ORG, new_trace(), {})
    save(analyses, trace_id)
    incident_id = analyses.list_incidents(ORG).items[0].id
    updated = analyses.update_incident(ORG, incident_id, status="acknowledged", owner="ana@example.com")
    assert (updated.status, updated.owner) == ("acknowledged", "ana@example.com")
    kept = analyses.update_incident(ORG, incident_id, status="resolved", owner=KEEP)
    assert (kept.status, kept.owner) == ("resolved", "ana@example.com")
    cleared = analyses.update_incident(ORG, incident_id, owner=None)
    assert (cleared.status, cleared.owner) == ("resolved", None)
    with pytest.raises(ValueError, match="status must be one of"):
        analyses.update_incident(ORG, incident_id, status="closed")
    with pytest.raises(IncidentNotFound):
        analyses.update_incident(ORG, "00000000-0000-0000-0000-000000000000", status="muted")


def test_a_failure_recorded_after_the_fix_reopens_a_resolved_incident_but_not_a_muted_one(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    t0 = datetime(2026, 5, 31, 10, 0, tzinfo=UTC)
    before, _ = store.add_trace(ORG, new_trace(created_at=t0), {})
    save(analyses, before)
    incident_id = analyses.list_incidents(ORG).items[0].id
    analyses.update_incident(ORG, incident_id, status="resolved", now=t0 + timedelta(hours=1))
    older, _ = store.add_trace(ORG, new_trace(created_at=t0 + timedelta(minutes=30)), {})
    save(analyses, older)  # recorded before the fix: still resolved
    assert analyses.get_incident(ORG, incident_id).status == "resolved"
    after, _ = store.add_trace(ORG, new_trace(created_at=t0 + timedelta(hours=2)), {})
    save(analyses, after)
    assert analyses.get_incident(ORG, incident_id).status == "open"
    analyses.update_incident(ORG, incident_id, status="muted", now=t0 + timedelta(hours=3))
    later, _ = store.add_trace(ORG, new_trace(created_at=t0 + timedelta(hours=4)), {})
    save(analyses, later)
    reread = analyses.get_incident(ORG, incident_id)
    assert (reread.status, reread.trace_count) == ("muted", 4)


def test_incidents_page_with_a_cursor_and_filter_by_status(
    store: SqliteTraceStore, analyses: SqliteAnalysisStore
) -> None:
    for i in range(5):
        trace_id, _ = store.add_trace(ORG, new_trace(created_at=minutes(i)), {})
        save(analyses, trace_id, f"step-{i + 1}: http 500 GET /api/x{i + 1}")  # five causes
    seen: list[str] = []
    cursor = None
    while True:
        page = analyses.list_incidents(ORG, limit=2, cursor=cursor)
        seen.extend(i.signature for i in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"step-{n}: http 500 GET /api/x{n}" for n in (5, 4, 3, 2, 1)]
    muted = analyses.list_incidents(ORG).items[2].id
    analyses.update_incident(ORG, muted, status="muted")
    assert [i.id for i in analyses.list_incidents(ORG, status="muted").items] == [muted]
    assert len(analyses.list_incidents(ORG, status="open").items) == 4
    with pytest.raises(InvalidCursor):
        analyses.list_incidents(ORG, cursor="not-a-cursor")


def test_the_component_migrates_once_per_data_dir(store: SqliteTraceStore) -> None:
    SqliteAnalysisStore(store.db)
    SqliteAnalysisStore(store.db)
    assert store.db.version("debugger") == 2
