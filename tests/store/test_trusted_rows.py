"""What a read builds without validating again (list items, steps) is the model validation would build,
and a row's cursor is the compact JSON of its time and key, urlsafe base64 without padding."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import BaseModel

from molar_mcp.models import StepSummary, TraceDetail, TraceListItem
from molar_mcp.models.rows import trusted
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.sqlite import step_summary
from tests.store.factory import AddTrace, minutes
from tests.store.test_nested_steps import tree_events


def _as_validated(model: BaseModel) -> None:
    """`model` equals what validating its values builds: the same fields set, the same JSON, byte for byte."""
    again = type(model).model_validate(model.__dict__)
    assert again == model
    assert again.model_fields_set == model.model_fields_set
    assert again.model_dump_json() == model.model_dump_json()
    assert again.model_dump_json(exclude_unset=True) == model.model_dump_json(exclude_unset=True)


def test_list_items_and_steps_are_the_models_validation_builds(store: SqliteTraceStore, add: AddTrace) -> None:
    # Every kind of value a row holds: nulls, a pinned-less bool, a replay (replay_of), nested steps (paths,
    # depths, parents), top-level steps whose path is their number, steps without an end (no duration).
    first, _ = add(created_at=minutes(1))
    add(
        created_at=minutes(2),
        scenario_title=None,
        source=None,
        code_sha=None,
        failure_signature=None,
        duration_ms=None,
        status="passed",
    )
    add(created_at=minutes(3), parent_trace_id=first, replay_from_step=2, duration_ms=0)
    _, nested = add(created_at=minutes(4), events=tree_events())
    page = store.list_traces(LOCAL_ORG_ID, TraceQuery(row_cursors=True))
    assert len(page.items) == 4
    assert page.items[1].replay_of == first
    for item in page.items:
        assert type(item) is TraceListItem
        _as_validated(item)
    for ref in [nested, *(i.short_id for i in page.items)]:
        detail = store.get_trace(LOCAL_ORG_ID, ref)
        assert detail.steps
        for step in detail.steps:
            assert type(step) is StepSummary
            _as_validated(step)
        # The detail: what validating the fields it sets builds (signed URLs and spans waiting left unset).
        again = TraceDetail.model_validate({name: getattr(detail, name) for name in detail.model_fields_set})
        assert again == detail
        assert again.model_fields_set == detail.model_fields_set
        assert "signed_urls" not in detail.model_fields_set
        assert again.model_dump_json() == detail.model_dump_json()
        assert again.model_dump_json(exclude_unset=True) == detail.model_dump_json(exclude_unset=True)
    paths = [s.path for s in store.get_trace(LOCAL_ORG_ID, nested).steps]
    assert paths == ["1", "2", "2.1", "2.2", "2.2.1", "3"]


def test_a_row_cursor_is_the_compact_json_of_its_time_and_key(store: SqliteTraceStore, add: AddTrace) -> None:
    for i in range(3):
        add(events=[], created_at=minutes(i))
    page = store.list_traces(LOCAL_ORG_ID, TraceQuery(row_cursors=True))
    assert page.row_cursors is not None
    for cursor in page.row_cursors:
        assert not set("=+/") & set(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_ms, pk = json.loads(raw)
        assert raw == json.dumps([created_ms, pk], separators=(",", ":")).encode()
        assert cursor == base64.urlsafe_b64encode(raw).decode().rstrip("=")
    expected = [int(minutes(i).timestamp() * 1000) for i in (2, 1, 0)]
    assert [json.loads(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)))[0] for c in page.row_cursors] == expected


def test_trusted_takes_every_field_in_the_order_the_model_declares_them() -> None:
    class Pair(BaseModel):
        a: int
        b: str | None = None

    built = trusted(Pair, {"a": 1, "b": None})
    assert built == Pair(a=1, b=None)
    assert built.model_dump_json() == '{"a":1,"b":null}'
    with pytest.raises(ValueError, match="in order"):
        trusted(Pair, {"b": "x", "a": 1})  # its JSON would be written in this order
    with pytest.raises(ValueError, match="in order"):
        trusted(Pair, {"a": 1})


def test_a_step_row_without_a_path_is_named_by_its_number_as_validation_names_it() -> None:
    # Rows of STEP_COLUMNS: step_id, ord, step, path, parent, depth, category, title, ok, first, last, count,
    # start_ts, end_ts. The store writes a path for every step; a row without one reads as validation reads it.
    for row in [
        ("s1", 0, 3, "", None, 0, None, "Pay", 0, 4, 9, 6, 100, 250),
        ("s2", 1, 4, "4", None, 0, None, None, None, 10, 10, 1, 5, None),
    ]:
        built = step_summary(row)
        _as_validated(built)
        assert built == StepSummary.model_validate(
            {
                "step_id": row[0],
                "step": row[2],
                "path": row[3],
                "depth": row[5],
                "title": row[7],
                "ok": None if row[8] is None else bool(row[8]),
                "first_seq": row[9],
                "last_seq": row[10],
                "event_count": row[11],
                "parent_step_id": None,
                "category": None,
                "duration_ms": None if row[13] is None else row[13] - row[12],
            }
        )
