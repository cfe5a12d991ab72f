"""The usual append's events reach the store as `UnkeyedEvents` (`store/live.py`), with no `IncomingEvent`
built for each: the same batches given that way and as `IncomingEvent`s store the same rows, steps and
trace counts, give the same results (accepted, duplicates, rejected, last seq), and publish the same
events with their step numbers and derived `ok` — for the usual batch and for one sorted out event by
event (seqs already stored, or not above the last)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from molar_mcp.models.incoming import EventIn
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.live import IncomingEvent, LiveTraces, UnkeyedEvents

TS = 1_763_629_200_000


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[LiveTraces, LiveTraces]]:
    a, b = SqliteTraceStore(tmp_path / "a"), SqliteTraceStore(tmp_path / "b")
    try:
        yield LiveTraces(a.db), LiveTraces(b.db)
    finally:
        a.close()
        b.close()


def _events(seqs: Sequence[int]) -> list[EventIn]:
    out = []
    for s in seqs:
        if s % 10 == 0:
            out.append(EventIn(seq=s, ts=TS + s, kind="step.start", step_id=f"s{s // 10}", payload={"title": "t"}))
        elif s % 7 == 0:
            out.append(
                EventIn(seq=s, ts=TS + s, kind="network.response", step_id=f"s{s // 10}", payload={"status": 500})
            )
        else:
            out.append(EventIn(seq=s, ts=TS + s, kind="log", step_id=f"s{s // 10}", message=f"line {s}"))
    return out


def _copy(events: list[EventIn]) -> list[EventIn]:
    return [msgspec.structs.replace(ev) for ev in events]


def _stored(live: LiveTraces, trace: str) -> list[Any]:
    with live.db.read() as conn:
        events = conn.execute(
            "SELECT seq, ts, kind, step_id, step, ok, message, payload, idempotency_key FROM events ORDER BY seq"
        ).fetchall()
        steps = conn.execute("SELECT * FROM steps ORDER BY ord").fetchall()
        counts = conn.execute("SELECT event_count, kind_counts FROM traces WHERE id = ?", (trace,)).fetchone()
    return [events, [s[1:] for s in steps], counts]


@pytest.mark.parametrize(
    "batches",
    [
        [range(0, 40), range(40, 100)],  # the usual batches
        [range(0, 30), range(20, 50), [55, 52, 60, 61], range(61, 70)],  # retried seqs, seqs not above the last
    ],
    ids=["usual", "sorted-out"],
)
def test_unkeyed_events_store_and_publish_what_incoming_events_do(
    stores: tuple[LiveTraces, LiveTraces], batches: list[Sequence[int]]
) -> None:
    items, unkeyed = stores
    trace_a, _ = items.create_trace(LOCAL_ORG_ID, scenario_slug="a")
    trace_b, _ = unkeyed.create_trace(LOCAL_ORG_ID, scenario_slug="a")
    for seqs in batches:
        events = _events(seqs)
        a = items.append_events(LOCAL_ORG_ID, trace_a, [IncomingEvent(i, ev) for i, ev in enumerate(_copy(events))])
        b = unkeyed.append_events(LOCAL_ORG_ID, trace_b, UnkeyedEvents(_copy(events)))
        assert (b.accepted, b.duplicates, b.rejected, b.last_seq) == (a.accepted, a.duplicates, a.rejected, a.last_seq)
        assert [ev.model_dump() for ev in b.stored] == [ev.model_dump() for ev in a.stored]
    assert _stored(unkeyed, trace_b)[0] == _stored(items, trace_a)[0]
    assert _stored(unkeyed, trace_b)[1:] == _stored(items, trace_a)[1:]
    assert any(ev.ok is False for ev in b.stored)  # derived from a status of 500
    assert all(ev.step is not None for ev in b.stored)


def test_unkeyed_events_are_indexed_items() -> None:
    events = _events([3, 4, 5])
    batch = UnkeyedEvents(events)
    assert len(batch) == 3
    assert [(i.index, i.event, i.idempotency_key) for i in batch] == [
        (0, events[0], None),
        (1, events[1], None),
        (2, events[2], None),
    ]
    assert batch[-1].index == 2
    assert [i.index for i in batch[1:]] == [1, 2]
