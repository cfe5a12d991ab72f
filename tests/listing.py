"""`list_traces`' structured content as tests read it: rows are arrays under one `columns` list."""

from typing import Any


def rows_of(listed: Any) -> list[dict[str, Any]]:
    """One dict per row. A row may be shorter than `columns` (its trailing nulls left out), never longer."""
    columns = listed["columns"]
    assert all(len(row) <= len(columns) for row in listed["rows"])
    return [dict(zip(columns, [*row, *[None] * (len(columns) - len(row))], strict=True)) for row in listed["rows"]]
