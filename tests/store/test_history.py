"""A test's history: passing streaks, failing since a commit, flaky tests, newly failing tests; replays
never count; runs stored out of order still read in time order; and the list filters."""

from __future__ import annotations

import pytest

from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.history import classify
from tests.store.factory import AddTrace, minutes


def run(add: AddTrace, slug: str, status: str, minute: int, sha: str, **fields: object) -> str:
    trace_id, _ = add(
        scenario_slug=slug,
        status=status,
        created_at=minutes(minute),
        code_sha=sha,
        failure_signature=None if status == "passed" else "boom",
        **fields,
    )
    return trace_id


@pytest.mark.parametrize(
    ("recent", "flaky", "newly"),
    [
        ("pppp", False, False),
        ("ffpp", False, True),  # two failures after passes: a regression
        ("ffff", False, False),  # always failing: not new
        ("fpfp", True, False),
        ("pfpp", True, False),
        ("pkpp", True, False),  # passed only on retry once
        ("fffp", False, True),
        ("ppff", False, False),  # fixed: passing again
        ("", False, False),
    ],
)
def test_flaky_and_newly_failing_are_read_from_the_newest_runs_first(recent: str, flaky: bool, newly: bool) -> None:
    assert classify(recent) == (flaky, newly)


def test_a_test_failing_since_a_commit_says_so_with_the_last_passing_run(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    for i in range(12):
        run(add, "checkout", "passed", i, f"pass{i:02d}aaaa")
    first_bad = run(add, "checkout", "failed", 20, "bad0000001")
    newest = run(add, "checkout", "failed", 21, "bad0000002")
    history = store.get_trace(LOCAL_ORG_ID, newest).history
    assert history is not None
    assert (history.runs, history.failed, history.recent) == (14, 2, "ff" + "p" * 12)
    assert (history.fail_streak, history.newly_failing, history.flaky) == (2, True, False)
    assert history.first_failing is not None
    assert history.first_failing.trace_id == first_bad
    assert history.last_passing is not None
    assert history.last_passing.code_sha == "pass11aaaa"
    assert history.summary.startswith("failing since commit bad0000001 ")
    assert "(2 runs); passed on the 12 runs before, last at commit pass11aaaa in " in history.summary


def test_a_flaky_test_counts_its_failures_and_retries(store: SqliteTraceStore, add: AddTrace) -> None:
    statuses = ["passed", "failed", "passed", "passed", "failed", "passed", "flaky", "passed"]
    ids = [run(add, "cart", s, i, f"c{i}aaaaaa") for i, s in enumerate(statuses)]
    history = store.get_trace(LOCAL_ORG_ID, ids[-1]).history
    assert history is not None
    assert history.flaky is True
    assert history.summary == "flaky: 3 of the last 8 runs failed (1 passed only on retry)"


def test_replays_and_running_traces_are_not_runs_of_the_test(store: SqliteTraceStore, add: AddTrace) -> None:
    source = run(add, "coupon", "failed", 1, "aaaa1111")
    run(add, "coupon", "passed", 2, "aaaa1111", parent_trace_id=source, replay_from_step=3)
    history = store.get_trace(LOCAL_ORG_ID, source).history
    assert history is not None
    assert (history.runs, history.recent) == (1, "f")
    assert history.summary == "failing on all of the last 1 runs"


def test_runs_stored_out_of_order_read_in_time_order(store: SqliteTraceStore, add: AddTrace) -> None:
    newest = run(add, "search", "failed", 30, "new00000")
    run(add, "search", "passed", 10, "old00000")  # an old bundle ingested late
    history = store.get_trace(LOCAL_ORG_ID, newest).history
    assert history is not None
    assert history.recent == "fp"
    assert history.newly_failing is True


def test_list_filters_flaky_and_newly_failing_tests(store: SqliteTraceStore, add: AddTrace) -> None:
    for i, s in enumerate(["passed", "failed", "passed", "failed"]):
        run(add, "flaky-test", s, i, f"f{i}aaaa")
    run(add, "regressed", "passed", 1, "r1aaaa")
    regressed = run(add, "regressed", "failed", 2, "r2aaaa")
    run(add, "steady", "passed", 1, "s1aaaa")
    run(add, "broken", "failed", 1, "b1aaaa")
    run(add, "broken", "failed", 2, "b2aaaa")

    def slugs(**kw: bool) -> list[str | None]:
        return [t.scenario_slug for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(**kw)).items]  # type: ignore[arg-type]

    assert set(slugs(flaky=True)) == {"flaky-test"}
    assert len(slugs(flaky=True)) == 4
    assert "flaky-test" not in slugs(flaky=False)
    assert [t.id for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(newly_failing=True)).items] == [regressed]
    # The filter is per org.
    assert store.list_traces("org_other", TraceQuery(flaky=True)).items == []


def test_a_store_made_before_histories_existed_gets_them_on_open(tmp_path: object, add: AddTrace) -> None:
    from pathlib import Path

    data = Path(str(tmp_path)) / "old"
    first = SqliteTraceStore(data)
    from tests.store.factory import new_trace

    first.add_trace(LOCAL_ORG_ID, new_trace(scenario_slug="x", status="passed", created_at=minutes(1)), {})
    trace_id, _ = first.add_trace(
        LOCAL_ORG_ID, new_trace(scenario_slug="x", status="failed", created_at=minutes(2)), {}
    )
    with first.db.tx() as conn:
        conn.execute("DELETE FROM scenario_health")
        conn.execute("DELETE FROM schema_versions WHERE component = 'history'")
        conn.execute("DROP TABLE scenario_health")
    first.close()
    reopened = SqliteTraceStore(data)
    try:
        history = reopened.get_trace(LOCAL_ORG_ID, trace_id).history
        assert history is not None
        assert history.newly_failing is True
        assert [t.id for t in reopened.list_traces(LOCAL_ORG_ID, TraceQuery(newly_failing=True)).items] == [trace_id]
    finally:
        reopened.close()
