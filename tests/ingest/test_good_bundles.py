"""Well-formed bundles: both archive formats, a top-level folder, blobs, defaults, form overrides."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from molar_mcp.ingest import Overrides, ingest_bundle, read_bundle
from molar_mcp.ingest.bundle import write_bundle
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from tests.bundles import BASE_TS, artifact_for, checkout_events, make_bundle, summary
from tests.ingest.archives import PNG, bundle_files, pack_tar, pack_zip, sha, stored


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_zip_and_tar_gz_bundles_are_both_accepted_and_read_back_whole(store: SqliteTraceStore, fmt: str) -> None:
    trace_id, short_id = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(fmt=fmt))
    detail = store.get_trace(LOCAL_ORG_ID, short_id)
    assert detail.id == trace_id
    assert detail.scenario_slug == "stripe-subscription-upgrade"
    assert detail.status == "failed"
    assert detail.event_count == len(checkout_events())
    assert [s.title for s in detail.steps][:2] == ["Open shop", "Add to cart"]


@pytest.mark.parametrize("pack", [pack_tar, pack_zip], ids=["tar.gz", "zip"])
def test_a_bundle_under_one_top_level_folder_is_accepted(
    store: SqliteTraceStore, pack: Callable[[dict[str, bytes]], bytes]
) -> None:
    files = bundle_files(summary(artifacts=[artifact_for(PNG)]), prefix="run-123/", blobs=(PNG,))
    _, short_id = ingest_bundle(store, LOCAL_ORG_ID, pack(files))
    detail = store.get_trace(LOCAL_ORG_ID, short_id)
    assert detail.event_count == len(checkout_events())
    assert [a.sha256 for a in detail.artifacts] == [sha(PNG)]


def test_members_outside_the_format_are_ignored(store: SqliteTraceStore) -> None:
    data = make_bundle(extra={"README.md": b"# notes", "logs/runner.txt": b"noise"})
    _, short_id = ingest_bundle(store, LOCAL_ORG_ID, data)
    assert store.get_trace(LOCAL_ORG_ID, short_id).event_count == len(checkout_events())


def test_blobs_of_a_bundle_are_stored_content_addressed_with_their_real_size(
    store: SqliteTraceStore,
) -> None:
    doc = summary(artifacts=[artifact_for(PNG) | {"size": 1}])
    _, short_id = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(doc, blobs={"png": PNG}))
    assert store.blobs.read(sha(PNG), LOCAL_ORG_ID) == PNG
    detail = store.get_trace(LOCAL_ORG_ID, short_id)
    assert detail.artifacts[0].size == len(PNG)
    assert detail.total_size_bytes == len(PNG)
    assert detail.blob_count == 1


def test_form_overrides_win_over_the_summary(store: SqliteTraceStore) -> None:
    doc = summary(pr_number=1, code_sha="aaaaaaa", source="pr")
    overrides = Overrides(scenario_slug="checkout-coupon", source="manual", commit_sha="fffffff", pr_number=7)
    _, short_id = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(doc), overrides)
    detail = store.get_trace(LOCAL_ORG_ID, short_id)
    assert detail.scenario_slug == "checkout-coupon"
    assert detail.source == "manual"
    assert detail.code_sha == "fffffff"
    assert detail.pr_number == 7


def test_without_overrides_the_summary_fields_are_kept(store: SqliteTraceStore) -> None:
    doc = summary(pr_number=4521, scenario_id="9A4C0000-0000-4000-8000-000000000001")
    _, short_id = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(doc), Overrides())
    detail = store.get_trace(LOCAL_ORG_ID, short_id)
    assert (detail.scenario_slug, detail.source, detail.code_sha) == (
        "stripe-subscription-upgrade",
        "pr",
        "a1b2c3d4e5",
    )
    assert detail.pr_number == 4521
    assert detail.scenario_id == "9a4c0000-0000-4000-8000-000000000001"
    assert detail.failure_signature == "webhook-404"


def test_created_at_and_duration_default_to_the_event_times(store: SqliteTraceStore) -> None:
    _, short_id = ingest_bundle(store, LOCAL_ORG_ID, make_bundle())
    detail = store.get_trace(LOCAL_ORG_ID, short_id)
    events = checkout_events()
    assert detail.created_at == datetime.fromtimestamp(BASE_TS / 1000, tz=UTC)
    assert detail.duration_ms == events[-1]["ts"] - events[0]["ts"]


def test_a_missing_title_is_made_from_the_slug_and_a_missing_scenario_id_from_the_slug_too(
    store: SqliteTraceStore,
) -> None:
    doc = summary(scenario_slug="cart-basic")
    del doc["scenario_title"]
    _, first = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(doc))
    _, second = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(doc))
    a, b = store.get_trace(LOCAL_ORG_ID, first), store.get_trace(LOCAL_ORG_ID, second)
    assert a.scenario_title == "Cart basic"
    assert a.scenario_id is not None
    assert a.scenario_id == b.scenario_id


def test_the_form_alone_can_name_the_scenario(store: SqliteTraceStore) -> None:
    doc = summary()
    del doc["scenario_slug"]
    _, short_id = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(doc), Overrides(scenario_slug="from-form"))
    assert store.get_trace(LOCAL_ORG_ID, short_id).scenario_slug == "from-form"


def test_unknown_event_kinds_are_stored_as_they_are(store: SqliteTraceStore) -> None:
    events = [*checkout_events()[:2], {"seq": 50, "ts": BASE_TS + 9000, "kind": "vendor.custom"}]
    _, short_id = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(events=events))
    page = store.list_events(LOCAL_ORG_ID, short_id, kind="vendor.custom")
    assert [e.seq for e in page.events] == [50]


def test_reading_a_bundle_stores_nothing_until_the_service_is_asked_to(store: SqliteTraceStore) -> None:
    before = stored(store)
    parsed = read_bundle(make_bundle(summary(artifacts=[artifact_for(PNG)]), blobs={"png": PNG}))
    assert stored(store) == before
    assert parsed.blobs == {sha(PNG): PNG}
    assert len(parsed.trace.events) == len(checkout_events())


def test_write_bundle_packs_a_trace_that_reads_back_the_same_and_always_the_same_bytes() -> None:
    doc = summary(artifacts=[artifact_for(PNG)], created_at="2025-11-20T09:00:00Z", duration_ms=1234)
    original = read_bundle(make_bundle(doc, blobs={"shot": PNG}))
    events = original.trace.events
    events[3] = events[3].model_copy(update={"payload": {**events[3].payload, "expected": None}})  # None as data

    packed = write_bundle(original.trace, original.blobs)
    again = read_bundle(packed)

    assert again.trace == original.trace
    assert again.blobs == original.blobs
    assert again.trace.events[3].payload["expected"] is None
    assert write_bundle(again.trace, again.blobs) == packed
