"""The replay queue every replica shares (store/replays.py), on both engines: claims in order, never the
same replay to two claimers, the per-org limit across claimers, leases that run out and are taken over,
writes of a replica that lost its lease refused, attempts bounded. Two stores on one database stand for
two replicas."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from molar_mcp.compose import open_store
from molar_mcp.store import SqliteTraceStore
from molar_mcp.store.replays import LeaseLost, ReplayStore, now_ms

ORG, OTHER = "org_a", "org_b"


def queue(store: SqliteTraceStore) -> ReplayStore:
    return ReplayStore(store.db)


def enqueue(replays: ReplayStore, org: str = ORG, owner: str = "front") -> str:
    return replays.create(
        org,
        trace_id="t-" + org,
        from_step=1,
        triggered_via="api",
        app="demo-shop",
        scenario_diff=None,
        source_diffs=[("app.py", "--- a/app.py\n+++ b/app.py\n")],
        message="queued",
        owner=owner,
    ).id


def claim(replays: ReplayStore, owner: str, *, now: int, limit: int = 10, lease_ms: int = 1000):  # type: ignore[no-untyped-def]
    return replays.claim(owner, lease_ms=lease_ms, per_org_limit=limit, max_attempts=3, now=now)


def test_claims_take_the_oldest_first_and_show_in_the_replays_state(store: SqliteTraceStore) -> None:
    replays = queue(store)
    ids = [enqueue(replays) for _ in range(3)]
    assert [replays.queue_position(ORG, i) for i in ids] == [1, 2, 3]
    now = now_ms()
    first = claim(replays, "a", now=now)
    assert first is not None
    assert first.id == ids[0]
    assert (first.status, first.owner, first.attempts, first.lease_until_ms) == ("running", "a", 1, now + 1000)
    assert first.source_diffs == [("app.py", "--- a/app.py\n+++ b/app.py\n")]  # the request, to rebuild it
    stored = replays.get(ORG, ids[0])
    assert (stored.status, stored.owner, stored.attempts) == ("running", "a", 1)
    assert [replays.queue_position(ORG, i) for i in ids] == [None, 1, 2]
    second = claim(replays, "b", now=now)
    assert second is not None
    assert second.id == ids[1]
    assert replays.queued_count(ORG) == 1


def test_the_per_org_limit_holds_across_claimers_and_other_orgs_go_on(store: SqliteTraceStore) -> None:
    replays = queue(store)
    ours = [enqueue(replays) for _ in range(3)]
    theirs = enqueue(replays, OTHER)
    now = now_ms()
    taken = [claim(replays, owner, now=now, limit=2) for owner in ("a", "b", "a")]
    assert [r.id if r else None for r in taken] == [ours[0], ours[1], theirs]  # our third waits
    assert claim(replays, "b", now=now, limit=2) is None
    replays.update(ORG, ours[0], owner="a", status="succeeded", phase="done")
    again = claim(replays, "b", now=now, limit=2)
    assert again is not None
    assert again.id == ours[2]


def test_a_running_replay_is_taken_over_only_when_its_lease_ran_out(store: SqliteTraceStore) -> None:
    replays = queue(store)
    replay_id = enqueue(replays)
    now = now_ms()
    assert claim(replays, "a", now=now) is not None
    assert claim(replays, "b", now=now + 999) is None  # a still holds it
    taken = claim(replays, "b", now=now + 1001)  # a stopped renewing: its lease ran out
    assert taken is not None
    assert (taken.id, taken.owner, taken.attempts) == (replay_id, "b", 2)
    # a comes back: everything it writes is refused, its renewal says it lost the replay
    with pytest.raises(LeaseLost):
        replays.update(ORG, replay_id, owner="a", phase="recording", message="a's late write")
    assert replays.renew("a", [replay_id], lease_ms=1000) == {replay_id}
    replays.fail_active(ORG, replay_id, error="interrupted", message="a stopping", owner="a")
    state = replays.get(ORG, replay_id)
    assert (state.status, state.owner, state.message) == ("running", "b", "queued")
    replays.update(ORG, replay_id, owner="b", status="succeeded", phase="done", message="b finished it")
    assert replays.get(ORG, replay_id).message == "b finished it"
    assert claim(replays, "c", now=now + 10**9) is None  # finished: never claimed again


def test_renewing_keeps_a_replay_and_attempts_are_bounded(store: SqliteTraceStore) -> None:
    replays = queue(store)
    replay_id = enqueue(replays)
    start = now_ms()
    assert claim(replays, "a", now=start, lease_ms=60_000) is not None
    assert replays.renew("a", [replay_id], lease_ms=120_000) == set()
    assert claim(replays, "b", now=start + 90_000) is None  # renewed past the first lease
    later = start + 10**7
    for attempt, owner in ((2, "b"), (3, "c")):
        taken = claim(replays, owner, now=later)
        assert taken is not None
        assert taken.attempts == attempt
        later += 10**7
    assert claim(replays, "d", now=later) is None  # tried three times: failed, not claimed a fourth time
    state = replays.get(ORG, replay_id)
    assert (state.status, state.error) == ("failed", "interrupted")
    assert "3 times" in (state.message or "")


def test_a_stopping_replica_fails_only_the_requests_it_queued(store: SqliteTraceStore) -> None:
    replays = queue(store)
    mine, yours = enqueue(replays, owner="a"), enqueue(replays, owner="b")
    running = enqueue(replays, owner="a")
    replays.update(ORG, running, status="running")  # claimed by now: not "queued"
    assert replays.fail_queued_by("a", message="interrupted: the server stopped before it started") == 1
    assert [replays.get(ORG, i).status for i in (mine, yours, running)] == ["failed", "queued", "running"]


def test_two_replicas_claiming_at_once_never_take_the_same_replay(
    store: SqliteTraceStore, data_dir: Path, engine: dict[str, str]
) -> None:
    other = open_store(data_dir, **engine)  # a second replica: its own connections to the same database
    try:
        replicas = [queue(store), queue(other)]
        ids = {enqueue(replicas[0], org=f"org_{i % 4}") for i in range(40)}
        claimed: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def work(replays: ReplayStore, owner: str) -> None:
            barrier.wait()
            while (record := replays.claim(owner, lease_ms=60_000, per_org_limit=100, max_attempts=3)) is not None:
                with lock:
                    claimed.append(record.id)

        threads = [threading.Thread(target=work, args=(replicas[i % 2], f"replica{i % 2}-worker{i}")) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert Counter(claimed) == Counter(ids)  # every replay claimed, none twice
    finally:
        other.close()
