"""Events as the store holds them, for code that reads a whole trace at once (the detectors, diffs).

A 10,000-event trace read as pydantic `Event`s spends most of its time building models. What reads
every event of a trace needs only a few fields of most of them, so it reads `StoredEvent`s instead: the
columns of the row as plain attributes and the payload's JSON text, parsed the first time `payload` is
read. `EventView` is what such code may read of an event; both `Event` and `StoredEvent` are one.
`trusted_event` builds an `Event` from values the store validated when they were written, without
validating them again. No I/O here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar, overload

import pydantic_core
from pydantic import BaseModel

from molar_mcp.models.traces import Event

M = TypeVar("M", bound=BaseModel)
_EMPTY_PAYLOAD = "{}"
_EVENT_FIELDS = frozenset(Event.model_fields)


class EventView(Protocol):
    """What readers of a whole trace read of one event (`Event` and `StoredEvent` both are one)."""

    @property
    def seq(self) -> int: ...
    @property
    def ts(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def step_id(self) -> str | None: ...
    @property
    def step(self) -> int | None: ...
    @property
    def ok(self) -> bool | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def payload(self) -> dict[str, Any]: ...


def trusted_event(
    seq: int,
    ts: int,
    kind: str,
    step_id: str | None,
    step: int | None,
    ok: bool | None,
    message: str | None,
    payload: dict[str, Any],
) -> Event:
    """An `Event` from values validated when they were stored, built without validating them again:
    what `Event.model_construct` gives with every field set, at a third of its cost."""
    event = object.__new__(Event)
    object.__setattr__(
        event,
        "__dict__",
        {
            "seq": seq,
            "ts": ts,
            "kind": kind,
            "step_id": step_id,
            "step": step,
            "ok": ok,
            "message": message,
            "payload": payload,
        },
    )
    object.__setattr__(event, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


def trusted(cls: type[M], values: dict[str, Any], *, defaults: tuple[str, ...] = ()) -> M:
    """A model of `cls` from `values` that already hold every one of its fields, in the order the model
    declares them (the order its JSON is written in), each of its type (built by our own code from data
    validated before), without validating them: what `model_validate` gives for such values, for a model
    without validators, private attributes or extra fields. `defaults`: the fields whose values are their
    defaults, as validating values without them would have left them (not in `model_fields_set`)."""
    if tuple(values) != _field_names(cls):
        raise ValueError(f"{cls.__name__} needs exactly its fields, in order: {list(_field_names(cls))}")
    model = _new(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values).difference(defaults))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


_new = object.__new__
_set = object.__setattr__


@functools.cache
def _field_names(cls: type[BaseModel]) -> tuple[str, ...]:
    return tuple(cls.__pydantic_fields__)


class StoredEvent:
    """One stored event: its columns as attributes, its payload parsed from its JSON text on first read.

    Build with `StoredEvent.from_row((seq, ts, kind, step_id, step, ok, message, payload_text))`
    (`ok` as the store keeps it: 1, 0 or None)."""

    __slots__ = ("_payload", "kind", "message", "ok", "payload_text", "seq", "step", "step_id", "ts")

    seq: int
    ts: int
    kind: str
    step_id: str | None
    step: int | None
    ok: bool | None
    message: str | None
    payload_text: str
    _payload: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StoredEvent:
        event = cls.__new__(cls)
        event.seq, event.ts, event.kind, event.step_id, event.step = row[0], row[1], row[2], row[3], row[4]
        event.ok = None if row[5] is None else bool(row[5])
        event.message, event.payload_text, event._payload = row[6], row[7] or _EMPTY_PAYLOAD, None
        return event

    @property
    def payload(self) -> dict[str, Any]:
        payload = self._payload
        if payload is None:
            text = self.payload_text
            payload = {} if text == _EMPTY_PAYLOAD else pydantic_core.from_json(text)
            self._payload = payload
        return payload

    def may_have(self, key: str) -> bool:
        """False when the payload surely has no member `key` (its JSON text never names it), without
        parsing it. The store writes payloads as JSON it serialised itself: a member name made of
        ASCII letters, digits and `_` is written as it is, between double quotes."""
        return f'"{key}"' in self.payload_text

    def to_event(self) -> Event:
        return trusted_event(self.seq, self.ts, self.kind, self.step_id, self.step, self.ok, self.message, self.payload)

    def __repr__(self) -> str:
        return f"StoredEvent(seq={self.seq}, kind={self.kind!r}, step={self.step}, ok={self.ok})"


class StoredEvents(Sequence[StoredEvent]):
    """A trace's stored rows (`StoredEvent.from_row`'s shape), each made a `StoredEvent` the first time it
    is read: what reads every event reads a column (`column`) without building any, and builds only the
    events it looks at."""

    __slots__ = ("_events", "rows")

    def __init__(self, rows: Sequence[Sequence[Any]]) -> None:
        self.rows = rows
        self._events: list[StoredEvent | None] = [None] * len(rows)

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> StoredEvent: ...
    @overload
    def __getitem__(self, index: slice) -> list[StoredEvent]: ...
    def __getitem__(self, index: int | slice) -> StoredEvent | list[StoredEvent]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.rows)))]
        event = self._events[index]
        if event is None:
            event = self._events[index] = StoredEvent.from_row(self.rows[index])
        return event

    def __iter__(self) -> Iterator[StoredEvent]:
        return (self[i] for i in range(len(self.rows)))

    def column(self, name: str) -> list[Any]:
        """One column of every row, in order: `seq`, `ts`, `kind`, `step_id`, `step`, `ok` (1, 0 or None as
        stored), `message` or `payload_text`."""
        k = _COLUMNS[name]
        return [r[k] for r in self.rows]


_COLUMNS = {name: k for k, name in enumerate(("seq", "ts", "kind", "step_id", "step", "ok", "message", "payload_text"))}


def may_have(event: EventView, key: str) -> bool:
    """False when the event's payload surely has no member `key`; for a `StoredEvent` without parsing
    its payload (see `StoredEvent.may_have`), for any other event by looking."""
    if isinstance(event, StoredEvent):
        return event.may_have(key)
    return key in event.payload


def naming(events: Sequence[EventView], key: str) -> list[int]:
    """The indices of the events whose payload may have a member `key` (`may_have`), in one pass: the
    payloads of `StoredEvent`s that never name it are not parsed."""
    needle = f'"{key}"'
    if isinstance(events, StoredEvents):
        return [i for i, text in enumerate(events.column("payload_text")) if text is not None and needle in text]
    return [
        i
        for i, e in enumerate(events)
        if (needle in e.payload_text if isinstance(e, StoredEvent) else key in e.payload)
    ]
