"""Nested steps: a step tree from `parent_step_id`, top-level numbering kept, the same tree whether a
trace comes whole (a bundle) or event by event (live append), and `?step=` by number, path or id."""

from __future__ import annotations

import random
from typing import Any

from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.live import IncomingEvent, LiveTraces
from tests.store.factory import AddTrace, event


def tree_events() -> list[dict[str, Any]]:
    """A Playwright-like test: a hook, then a `test.step` holding two actions, the second retried
    inside its own step (failed once, then passed), then a failing assertion at the top level."""
    evs: list[dict[str, Any]] = []

    def add(kind: str, step_id: str | None, **fields: Any) -> None:
        evs.append(event(len(evs), kind, step_id, **fields))

    add("step.start", "hook", message="beforeEach", payload={"category": "hook"})
    add("action", "hook", message="goto /")
    add("step.end", "hook", ok=True)
    add("step.start", "login", message="log in", payload={"category": "test.step"})
    add("step.start", "fill", message="fill #email", payload={"parent_step_id": "login", "category": "action"})
    add("action", "fill", message="fill")
    add("step.end", "fill", ok=True)
    add("step.start", "click", message="click Submit", payload={"parent_step_id": "login", "category": "action"})
    add("step.start", "wait", message="wait for /api", payload={"parent_step_id": "click", "category": "action"})
    add("error", "wait", message="timeout waiting for /api")
    add("step.end", "wait", ok=False)
    add("step.end", "click", ok=True)  # retried and passed: the failure inside is recovered
    add("step.end", "login", ok=True)
    add("step.start", "expect", message="expect title", payload={"category": "assertion"})
    add("assertion", "expect", ok=False, message="expected 'Shop' got 'Sold out'")
    add("step.end", "expect", ok=False)
    add("log", None, message="done")
    return evs


EXPECTED = [
    # path, step_id, step, depth, parent, ok, category, event_count
    ("1", "hook", 1, 0, None, True, "hook", 3),
    ("2", "login", 2, 0, None, True, "test.step", 10),
    ("2.1", "fill", 2, 1, "login", True, "action", 3),
    ("2.2", "click", 2, 1, "login", True, "action", 5),
    ("2.2.1", "wait", 2, 2, "click", False, "action", 3),
    ("3", "expect", 3, 0, None, False, "assertion", 3),
]


def shape(store: SqliteTraceStore, trace_id: str) -> list[tuple[Any, ...]]:
    d = store.get_trace(LOCAL_ORG_ID, trace_id)
    return [(s.path, s.step_id, s.step, s.depth, s.parent_step_id, s.ok, s.category, s.event_count) for s in d.steps]


def test_a_bundle_with_parent_step_ids_is_stored_as_a_tree_with_top_level_numbers(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    trace_id, _ = add(events=tree_events())
    assert shape(store, trace_id) == EXPECTED
    detail = store.get_trace(LOCAL_ORG_ID, trace_id)
    click = next(s for s in detail.steps if s.step_id == "click")
    assert (click.first_seq, click.last_seq, click.duration_ms) == (7, 11, 40)
    events = store.list_events(LOCAL_ORG_ID, trace_id, limit=100).events
    # Every event carries its top-level ancestor's number; its step_id stays its innermost step.
    assert [(e.step_id, e.step) for e in events if e.kind == "error"] == [("wait", 2)]


def test_live_append_in_small_batches_builds_the_same_tree_as_one_bundle(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    whole, _ = add(events=tree_events())
    live = LiveTraces(store.db)
    trace_id, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="tree", source="manual")
    evs = tree_events()
    for start in range(0, len(evs), 3):
        batch = [IncomingEvent(i, Event.model_validate(e), None) for i, e in enumerate(evs[start : start + 3])]
        live.append_events(LOCAL_ORG_ID, trace_id, batch)
    assert shape(store, trace_id) == shape(store, whole) == EXPECTED


def test_events_filter_by_top_level_number_path_or_step_id_selects_the_subtree(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    trace_id, _ = add(events=tree_events())

    def seqs(step: str) -> list[int]:
        return [e.seq for e in store.list_events(LOCAL_ORG_ID, trace_id, step=step, limit=100).events]

    assert seqs("2") == list(range(3, 13))  # the whole `log in` step with its children
    assert seqs("login") == seqs("2")
    assert seqs("2.2") == [7, 8, 9, 10, 11]
    assert seqs("click") == seqs("2.2")
    assert seqs("2.2.1") == [8, 9, 10]
    assert seqs("2.9") == []
    assert seqs("4") == []


def test_a_parent_that_never_began_makes_a_top_level_step(store: SqliteTraceStore, add: AddTrace) -> None:
    evs = [
        event(0, "step.start", "orphan", payload={"parent_step_id": "missing"}),
        event(1, "step.end", "orphan", ok=True),
        event(2, "step.start", "self", payload={"parent_step_id": "self"}),
    ]
    trace_id, _ = add(events=evs)
    assert [(s.path, s.depth, s.parent_step_id) for s in store.get_trace(LOCAL_ORG_ID, trace_id).steps] == [
        ("1", 0, None),
        ("2", 0, None),
    ]


def wide_tree_events(steps: int) -> list[dict[str, Any]]:
    """A generated run with `steps` steps nested up to four deep (random but fixed): each step begins,
    holds a few events (some failing), its children come between, and it ends — as a reporter streams
    a long test. Steps open under the innermost open one, or back out to a random ancestor."""
    rng = random.Random(1_000 + steps)
    evs: list[dict[str, Any]] = []
    open_steps: list[str] = []

    def add(kind: str, step_id: str | None, **fields: Any) -> None:
        evs.append(event(len(evs), kind, step_id, **fields))

    for n in range(steps):
        while open_steps and (len(open_steps) >= 4 or rng.random() < 0.4):
            add("step.end", open_steps.pop(), ok=rng.random() < 0.9)
        step_id = f"s{n}"
        payload: dict[str, Any] = {"category": rng.choice(["test.step", "action", "hook"])}
        if open_steps:
            payload["parent_step_id"] = open_steps[-1]
        add("step.start", step_id, message=f"step {n}", payload=payload)
        open_steps.append(step_id)
        for _ in range(rng.randint(0, 3)):
            kind = rng.choice(["action", "log", "assertion", "network.response"])
            add(kind, step_id, ok=rng.random() < 0.8 if kind == "assertion" else None, payload={"status": 200})
    while open_steps:
        add("step.end", open_steps.pop(), ok=True)
    return evs


def rows(store: SqliteTraceStore, trace_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    d = store.get_trace(LOCAL_ORG_ID, trace_id)
    steps = [
        (s.path, s.step_id, s.step, s.depth, s.parent_step_id, s.ok, s.category, s.title, s.event_count)
        for s in d.steps
    ]
    spans = [(s.first_seq, s.last_seq, s.duration_ms) for s in d.steps]
    events = [(e.seq, e.step_id, e.step, e.ok) for e in store.list_events(LOCAL_ORG_ID, trace_id, limit=5000).events]
    return [(*s, *span) for s, span in zip(steps, spans, strict=True)], events


def test_live_append_reads_only_the_steps_a_batch_names_and_still_builds_the_bundles_tree(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    evs = wide_tree_events(200)
    whole, _ = add(events=evs)
    expected = rows(store, whole)
    assert len(expected[0]) == 200
    assert max(s[3] for s in expected[0]) == 3
    live = LiveTraces(store.db)
    for size in (5, 100):
        trace_id, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug=f"wide-{size}", source="manual")
        for start in range(0, len(evs), size):
            batch = [IncomingEvent(i, Event.model_validate(e), None) for i, e in enumerate(evs[start : start + size])]
            assert live.append_events(LOCAL_ORG_ID, trace_id, batch).accepted == len(batch)
        assert rows(store, trace_id) == expected, f"batches of {size}"
