"""A trace's rows, built a chunk at a time with runs of plain events folded into their step at once
(`event_rows`), are the rows and steps that observing every event one by one gives (`normalize_events`):
on the shipped recordings of the demo shop and on a generated trace of nested steps, failures inside
steps, failed steps that recover, events of no step and of a parent after its child."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest

from molar_mcp.ingest.bundle import read_bundle
from molar_mcp.models import Event
from molar_mcp.store.db import FlatRows
from molar_mcp.store.sqlite import event_rows, normalize_events
from molar_mcp.store.steps import StepTree

TS = 1_763_629_200_000


def _one_by_one(events: list[Event]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    tree = StepTree()
    numbered = normalize_events(events, tree)
    rows = [
        (e.seq, e.ts, e.kind, e.step_id, e.step, None if e.ok is None else int(e.ok), e.message, e.payload)
        for e in numbered
    ]
    return rows, [n.row() for n in tree.ordered()]


def _in_chunks(events: list[Event], size: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    import json

    tree = StepTree()
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(events), size):
        rows.extend(event_rows(events[start : start + size], tree))
    return [(*r[:7], json.loads(r[7])) for r in rows], [n.row() for n in tree.ordered()]


def _generated() -> list[Event]:
    """Nested steps with plain runs between their children's events, a failed assertion inside a nested
    step, a failed HTTP response (no failure of the step), a retried step whose own end says ok, events
    of no step, an event of a step id never started, and a console error (ok derived)."""
    spec: list[dict[str, Any]] = []
    for top in range(1, 5):
        spec.append({"kind": "step.start", "step_id": f"t{top}", "message": f"step {top}"})
        spec.extend({"kind": "log", "step_id": f"t{top}", "message": f"a{i}"} for i in range(3))
        for child in range(1, 3):
            cid = f"t{top}.{child}"
            spec.append({"kind": "step.start", "step_id": cid, "payload": {"parent_step_id": f"t{top}"}})
            spec.extend({"kind": "action", "step_id": cid, "payload": {"n": i}} for i in range(4))
            if top == 2 and child == 2:
                spec.append({"kind": "assertion", "step_id": cid, "ok": False, "message": "expected 1, got 2"})
            if top == 3:
                spec.append({"kind": "network.response", "step_id": cid, "payload": {"status": 503}})
                spec.append({"kind": "console", "step_id": cid, "payload": {"level": "error"}})
            spec.extend({"kind": "log", "step_id": f"t{top}", "message": "parent again"} for _ in range(2))
            spec.append({"kind": "step.end", "step_id": cid, "ok": not (top == 4 and child == 1)})
        spec.append({"kind": "log", "message": "between steps"})
        spec.append({"kind": "log", "step_id": "never-started", "message": "no start"})
        spec.append({"kind": "step.end", "step_id": f"t{top}", "ok": top != 2})
    events = []
    for seq, fields in enumerate(spec):
        events.append(Event.model_validate({"seq": seq, "ts": TS + seq * 7 % 50 + seq, **fields}))
    return events


def _recorded() -> list[list[Event]]:
    folder = resources.files("molar_mcp.demo") / "scenario_runs"
    runs = sorted(p for p in folder.iterdir() if p.name.endswith(".tar.gz"))
    assert runs
    return [read_bundle(p.read_bytes()).trace.events for p in runs]


@pytest.mark.parametrize("size", [1, 3, 7, 5_000])
def test_rows_built_chunk_by_chunk_equal_those_of_each_event_observed_alone(size: int) -> None:
    for events in [_generated(), *_recorded()]:
        assert _in_chunks(events, size) == _one_by_one(events)


def test_rows_of_events_given_as_their_fields_equal_those_of_the_models() -> None:
    """A bundle's reader gives each event as its validated fields (`EventFields`), not a model: the rows and
    steps are the same (with and without the table's `pk`)."""
    for events in [_generated(), *_recorded()]:
        fields = [dict(e.__dict__) for e in events]
        for pk in (None, 7):
            by_model, by_fields = StepTree(), StepTree()
            assert event_rows(fields, by_fields, pk=pk) == event_rows(events, by_model, pk=pk)
            assert [n.row() for n in by_fields.ordered()] == [n.row() for n in by_model.ordered()]


def test_rows_laid_end_to_end_are_the_rows_in_order() -> None:
    """`event_rows(…, flat=True)` (a bundle's chunks) gives each row's values one after the other, and grows
    the step tree as the rows do."""
    for events in [_generated(), *_recorded()]:
        by_rows, by_flat = StepTree(), StepTree()
        rows = event_rows(events, by_rows, pk=7)
        flat = event_rows(events, by_flat, pk=7, flat=True)
        assert isinstance(flat, FlatRows)
        assert flat.width == len(rows[0])
        assert flat == [value for row in rows for value in row]
        assert [n.row() for n in by_flat.ordered()] == [n.row() for n in by_rows.ordered()]
