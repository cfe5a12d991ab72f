"""The validation table of docs/bundle-format.md: each bad bundle is refused and stores nothing."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from molar_mcp.ingest import BundleError, Overrides, ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from tests.bundles import checkout_events, make_bundle, summary
from tests.ingest.archives import SMALL_LIMIT, BadBundle, bad_bundles, stored

CATALOGUE = bad_bundles()


def refuse(store: SqliteTraceStore, data: bytes, overrides: Overrides | None = None) -> BundleError:
    """Ingest `data`, expect a refusal, and check the data dir is exactly as it was."""
    before = stored(store)
    with pytest.raises(BundleError) as caught:
        ingest_bundle(store, LOCAL_ORG_ID, data, overrides, max_bytes=SMALL_LIMIT)
    assert stored(store) == before
    return caught.value


@pytest.fixture
def store_with_a_trace(store: SqliteTraceStore) -> SqliteTraceStore:
    """A store that already holds a trace, so "nothing stored" is not merely "still empty"."""
    ingest_bundle(store, LOCAL_ORG_ID, make_bundle())
    return store


@pytest.mark.parametrize("bad", CATALOGUE, ids=[b.name for b in CATALOGUE])
def test_each_bad_bundle_of_the_validation_table_is_refused_with_its_kind_and_nothing_is_stored(
    store_with_a_trace: SqliteTraceStore, bad: BadBundle
) -> None:
    err = refuse(store_with_a_trace, bad.data)
    assert err.kind == bad.kind, err.message
    assert bad.says in err.message
    assert err.message == str(err)


def test_the_catalogue_covers_every_error_kind_of_the_format() -> None:
    kinds = {b.kind for b in CATALOGUE}
    assert kinds == {
        "unsupported_media_type",
        "bad_bundle",
        "unsafe_path",
        "payload_too_large",
        "validation_error",
    }


def test_a_bundle_whose_seq_goes_backwards_is_refused_and_nothing_is_stored(store: SqliteTraceStore) -> None:
    events = checkout_events()
    events[4]["seq"] = 2
    err = refuse(store, make_bundle(events=events))
    assert err.kind == "validation_error"
    assert "line 5" in err.message
    assert "seq 2" in err.message


def test_a_repeated_seq_is_refused_as_not_strictly_increasing(store: SqliteTraceStore) -> None:
    events = checkout_events()[:3]
    events[2]["seq"] = events[1]["seq"]
    assert "line 3" in refuse(store, make_bundle(events=events)).message


def test_the_line_number_of_a_bad_line_counts_the_blank_lines_before_it(store: SqliteTraceStore) -> None:
    good = json.dumps(checkout_events()[0])
    err = refuse(store, make_bundle(events_raw=f"{good}\n\n\nnot json\n".encode()))
    assert err.kind == "validation_error"
    assert "line 4 is not JSON" in err.message


@pytest.mark.parametrize(
    "line",
    ["[1, 2, 3]", '"an event"', '{"seq": -1, "ts": 1, "kind": "log"}', '{"seq": 0, "ts": 1, "kind": ""}'],
    ids=["array", "string", "negative-seq", "empty-kind"],
)
def test_a_json_line_that_is_not_an_event_is_refused_naming_the_line(store: SqliteTraceStore, line: str) -> None:
    good = json.dumps(checkout_events()[0] | {"seq": 0})
    err = refuse(store, make_bundle(events_raw=f"{good}\n{line}\n".encode()))
    assert err.kind == "validation_error"
    assert "line 2" in err.message


def test_a_seq_past_the_64_bit_range_is_refused_rather_than_failing_in_the_store(
    store: SqliteTraceStore,
) -> None:
    events = checkout_events()[:2]
    events[1]["seq"] = 2**63
    err = refuse(store, make_bundle(events=events))
    assert err.kind == "validation_error"
    assert "line 2" in err.message


def test_a_pr_number_past_the_64_bit_range_is_refused(store: SqliteTraceStore) -> None:
    assert refuse(store, make_bundle(summary(pr_number=2**63))).kind == "validation_error"
    assert refuse(store, make_bundle(), Overrides(pr_number=2**64)).kind == "validation_error"


def test_a_summary_that_is_not_a_json_object_is_refused(store: SqliteTraceStore) -> None:
    data = make_bundle(extra={"summary.json": b"[1, 2]"})
    err = refuse(store, data)
    assert err.kind == "validation_error"
    assert "summary.json" in err.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", "exploded"), ("source", "carrier-pigeon"), ("scenario_id", "not-a-uuid")],
)
def test_a_summary_field_outside_its_vocabulary_is_refused(store: SqliteTraceStore, field: str, value: str) -> None:
    err = refuse(store, make_bundle(summary(**{field: value})))
    assert err.kind == "validation_error"
    assert value in err.message


def test_a_bundle_without_any_scenario_slug_is_refused(store: SqliteTraceStore) -> None:
    doc = summary()
    del doc["scenario_slug"]
    err = refuse(store, make_bundle(doc))
    assert err.kind == "validation_error"
    assert "scenario_slug" in err.message


def test_a_bundle_exactly_at_the_limit_is_not_too_large_but_one_byte_more_is(
    store: SqliteTraceStore,
) -> None:
    data = make_bundle()
    ingest_bundle(store, LOCAL_ORG_ID, data, max_bytes=len(data))
    with pytest.raises(BundleError) as caught:
        ingest_bundle(store, LOCAL_ORG_ID, data, max_bytes=len(data) - 1)
    assert caught.value.kind == "payload_too_large"


def test_a_bundle_cut_short_inside_its_events_is_refused_and_nothing_is_stored(store: SqliteTraceStore) -> None:
    events = [checkout_events()[0] | {"seq": n, "message": f"line {n} {n * 7919 % 10007}"} for n in range(3_000)]
    whole = make_bundle(events=events)
    assert len(whole) < SMALL_LIMIT
    for cut in (len(whole) // 3, len(whole) * 2 // 3, len(whole) - 30):
        assert refuse(store, whole[:cut]).kind == "bad_bundle"


def test_a_sparse_events_member_is_read_and_its_holes_refused_as_a_bad_line(
    store: SqliteTraceStore, tmp_path: Path
) -> None:
    """GNU tar stores a file with holes as a sparse member; the events stream reads it as any member (its
    holes are NUL bytes: not JSON), and the line is named."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(summary()))
    good = json.dumps(checkout_events()[0] | {"seq": 0}).encode() + b"\n"
    with open(folder / "events.ndjson", "wb") as fh:
        fh.write(good)
        fh.seek(64 * 1024, 1)  # a hole
        fh.write(b"\n" + good)
    archive = tmp_path / "bundle.tar.gz"
    subprocess.run(["tar", "--sparse", "-czf", archive, "-C", folder, "summary.json", "events.ndjson"], check=True)
    with tarfile.open(archive) as tf:
        assert tf.getmember("events.ndjson").issparse()
    err = refuse(store, archive.read_bytes())
    assert err.kind == "validation_error"
    assert "line 2 is not JSON" in err.message
