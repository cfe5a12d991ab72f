"""Group commit of live appends on the embedded store (`store/live.py LiveTraces.append_events`): appends
that wait while the store's one writer is busy are stored together in one transaction by the thread that
takes the writer next, each caller answered once its own events are committed. A failing batch in a
group fails alone: the others' events land, its error is its own, nothing of it is stored. The store's
writer connection is watched (its trace callback) to count the transactions that commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.live import AppendResult, EventConflict, IncomingEvent, LiveTraces, TraceNotRunning

TS = 1_763_629_200_000


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveTraces]:
    store = SqliteTraceStore(tmp_path / "data")
    try:
        yield LiveTraces(store.db)
    finally:
        store.close()


def _batch(seqs: range, step: str = "s1", keys: dict[int, str] | None = None) -> list[IncomingEvent]:
    keys = keys or {}
    return [
        IncomingEvent(i, Event(seq=s, ts=TS + s, kind="log", step_id=step, message=f"line {s}"), keys.get(s))
        for i, s in enumerate(seqs)
    ]


def _commits(live: LiveTraces) -> list[str]:
    """The COMMITs the store's writer connection runs from now on."""
    seen: list[str] = []
    live.db._conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():  # other threads reaching the writer: polled, there is no event to wait on
        assert time.monotonic() < deadline, "the appends did not come to wait for the writer"
        time.sleep(0.001)


def _appends_held_then_released(live: LiveTraces, first: tuple[Any, ...], *waiting: tuple[Any, ...]) -> list[Any]:
    """`first` takes the writer (and waits for a write transaction the test holds), then the `waiting`
    appends come and wait behind it; then the test's transaction ends. Each append's result or error."""
    outcomes: list[Any] = [None] * (1 + len(waiting))

    def run(index: int, org: str, trace: str, batch: list[IncomingEvent]) -> None:
        try:
            outcomes[index] = live.append_events(org, trace, batch)
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(0, *first))]
    with live.db.tx():  # another write in progress: the store's writer is busy
        threads[0].start()
        _wait_for(lambda: live._writer.locked() and not live._waiting)  # `first` took the writer, alone
        for index, args in enumerate(waiting, start=1):
            threads.append(threading.Thread(target=run, args=(index, *args)))
            threads[-1].start()
        _wait_for(lambda: len(live._waiting) == len(waiting))
    for thread in threads:
        thread.join(10)
    return outcomes


def _seqs(live: LiveTraces, trace: str) -> list[int]:
    events, _ = live.events_after(LOCAL_ORG_ID, trace, -1, limit=10_000)
    return [ev.seq for ev in events]


def test_appends_that_wait_for_the_writer_are_committed_together(live: LiveTraces) -> None:
    a, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="a")
    b, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="b")
    c, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="c")
    commits = _commits(live)
    outcomes = _appends_held_then_released(
        live,
        (LOCAL_ORG_ID, a, _batch(range(0, 10))),
        (LOCAL_ORG_ID, b, _batch(range(0, 10))),
        (LOCAL_ORG_ID, c, _batch(range(0, 20))),
    )
    assert [o.accepted for o in outcomes] == [10, 10, 20]
    assert len(commits) == 1 + 1 + 1  # the test's transaction, `first` alone, then the two waiting together
    assert _seqs(live, a) == list(range(10))
    assert _seqs(live, b) == list(range(10))
    assert _seqs(live, c) == list(range(20))
    assert [o.trace_id for o in outcomes] == [a, b, c]


def test_a_failing_batch_in_a_group_fails_alone_and_stores_nothing(live: LiveTraces) -> None:
    good, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="good")
    keyed, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="keyed")
    finished, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="finished")
    live.append_events(LOCAL_ORG_ID, keyed, _batch(range(0, 5), keys={4: "k4"}))
    live.finish_trace(LOCAL_ORG_ID, finished, status="passed")
    outcomes = _appends_held_then_released(
        live,
        (LOCAL_ORG_ID, good, _batch(range(0, 3))),
        (LOCAL_ORG_ID, good, _batch(range(3, 6))),
        # The key of seq 4 again, for another event: a conflict (409), after events it would have stored.
        (LOCAL_ORG_ID, keyed, _batch(range(5, 9), keys={8: "k4"})),
        (LOCAL_ORG_ID, finished, _batch(range(0, 2))),
        (LOCAL_ORG_ID, good, _batch(range(6, 10))),
    )
    assert isinstance(outcomes[2], EventConflict)
    assert isinstance(outcomes[3], TraceNotRunning)
    assert [o.accepted for o in (outcomes[0], outcomes[1], outcomes[4])] == [3, 3, 4]
    assert _seqs(live, good) == list(range(10))
    assert _seqs(live, keyed) == list(range(5))  # nothing of the conflicting batch
    assert _seqs(live, finished) == []


def test_grouped_batches_keep_order_steps_and_idempotency_as_one_after_another(live: LiveTraces) -> None:
    grouped, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="grouped")
    alone, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="alone")
    batches = [
        _batch(range(0, 4), step="s1", keys={3: "k3"}),
        # seq 3 retried with its key (the same event: a duplicate), then a new step
        _batch(range(3, 4), step="s1", keys={3: "k3"}) + _batch(range(4, 8), step="s2"),
        _batch(range(5, 10), step="s3"),  # seqs 5-7 are stored by then (not retried bodies: other step)
    ]
    commits = _commits(live)
    grouped_outcomes = _appends_held_then_released(
        live,
        *(
            (LOCAL_ORG_ID, grouped, [IncomingEvent(i.index, i.event.model_copy(), i.idempotency_key) for i in b])
            for b in batches
        ),
    )
    assert len(commits) == 3  # the test's, the first alone, the other two together
    assert grouped_outcomes[1].duplicates == 1
    alone_outcomes: list[AppendResult | Exception] = []
    for batch in batches:
        try:
            alone_outcomes.append(live.append_events(LOCAL_ORG_ID, alone, batch))
        except Exception as exc:
            alone_outcomes.append(exc)
    assert type(grouped_outcomes[2]) is type(alone_outcomes[2])
    for together, one_by_one in zip(grouped_outcomes[:2], alone_outcomes[:2], strict=True):
        assert (together.accepted, together.duplicates, together.last_seq) == (
            one_by_one.accepted,
            one_by_one.duplicates,
            one_by_one.last_seq,
        )
        assert [(e.seq, e.step) for e in together.stored] == [(e.seq, e.step) for e in one_by_one.stored]
    grouped_events, _ = live.events_after(LOCAL_ORG_ID, grouped, -1)
    alone_events, _ = live.events_after(LOCAL_ORG_ID, alone, -1)
    assert [e.model_dump() for e in grouped_events] == [e.model_dump() for e in alone_events]
    assert [e.seq for e in grouped_events] == list(range(8))
