"""An appended event as msgspec decodes it, before (and mostly instead of) a pydantic `Event`.

The usual live append — `{"events": [...]}` of valid events without idempotency keys — spent about a
third of its server CPU validating the body into `Event` models (bench/README.md, `bench_live.py`), yet
a model is only needed when a follower is sent the event: the store reads plain attributes. `EventIn`
has `Event`'s fields and bounds with strict JSON types (an integer is a JSON integer, a boolean
`true`/`false`), so msgspec takes only bodies pydantic takes too, with the same values; anything else
goes on to pydantic, which decides and words the error. `to_event` builds the `Event` a follower is
sent, without validating again. No I/O here.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from molar_mcp.models.limits import MAX_INT64
from molar_mcp.models.rows import trusted_event
from molar_mcp.models.traces import Event

_Int64 = Annotated[int, Meta(ge=0, le=MAX_INT64)]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """`Event`'s fields with its bounds (`models/traces.py`), decoded strictly. Mutable: the store cleans
    its text as it keeps it (its step number and derived `ok` stay in its row: `numbered`)."""

    seq: _Int64
    ts: _Int64
    kind: Annotated[str, Meta(min_length=1, max_length=64)]
    step_id: Annotated[str, Meta(max_length=128)] | None = None
    step: Annotated[int, Meta(ge=1)] | None = None
    ok: bool | None = None
    message: str | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_event(self) -> Event:
        """The `Event` of these values (validated as they were decoded)."""
        return self.numbered(self.step, self.ok)

    def numbered(self, step: int | None, ok: bool | None) -> Event:
        """The `Event` of these values with `step` and `ok` as given: the store's numbering of it and its
        derived `ok` (`store/live.py StoredBatch`)."""
        return trusted_event(self.seq, self.ts, self.kind, self.step_id, step, ok, self.message, self.payload)


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """The usual append body: `{"events": [...]}`, 1 to `max_batch` events (checked by the caller)."""

    events: list[EventIn]


BATCH_DECODER = msgspec.json.Decoder(BatchIn)
EVENT_DECODER = msgspec.json.Decoder(EventIn)
