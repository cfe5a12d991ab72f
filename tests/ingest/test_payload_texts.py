"""A bundle's fast reader also writes each event's payload as the store keeps it (`EventChunk.payload_texts`),
with msgspec's encoder, one call a chunk: the same text `pydantic_core.to_json` writes (what the store wrote
before, and still writes for every other event), on every code point, a million floats' worth of their
shapes, the shipped recordings and edge cases, so the stored rows are the same bytes; the store binds the
texts it is given."""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

import pydantic_core
import pytest

from molar_mcp.ingest import ingest_bundle
from molar_mcp.ingest.bundle import _fast_events
from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.port import EventChunk
from molar_mcp.store.sqlite import event_rows
from tests.bundles import make_bundle, summary
from tests.ingest.test_event_fields import _recorded_runs

TS = 1_763_629_200_000


def _lines(payloads: list[dict[str, Any]], *, ascii_every: int = 2) -> list[bytes]:
    """One events.ndjson line per payload, half of them with non-ASCII text escaped (`\\u00e9`)."""
    return [
        json.dumps({"seq": n, "ts": TS + n, "kind": "log", "payload": p}, ensure_ascii=n % ascii_every == 0).encode()
        + b"\n"
        for n, p in enumerate(payloads)
    ]


def _texts(lines: list[bytes]) -> tuple[list[str], list[str]]:
    """What the fast reader gives as the payloads' text, and what pydantic writes of the same payloads."""
    chunk = _fast_events(b"[" + b",".join(lines) + b"]", len(lines), -1)
    assert chunk is not None
    assert chunk.payload_texts is not None
    return chunk.payload_texts, [pydantic_core.to_json(ev.payload).decode() for ev in chunk]


def test_every_code_point_is_written_as_pydantic_writes_it() -> None:
    points = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]  # (lone surrogates: no JSON)
    payloads = [
        {"k" + "".join(points[i : i + 4096]): "".join(points[i : i + 4096]) + '\\"/'}
        for i in range(0, len(points), 4096)
    ]
    got, want = _texts(_lines(payloads))
    assert got == want


def _floats() -> list[float]:
    rng = random.Random(8)
    values = [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1, 1e15, 1e16, 1e21, 1e22, 123456789012345680.0]
    values += [10.0**k for k in range(-323, 308)] + [-(10.0**k) for k in range(-323, 308)]
    while len(values) < 40_000:
        value = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if math.isfinite(value):
            values.append(value)
    values += [rng.uniform(-1e6, 1e6) for _ in range(5_000)] + [
        float(rng.randint(-(10**18), 10**18)) for _ in range(5_000)
    ]
    return values


def test_floats_of_every_shape_are_written_as_pydantic_writes_them() -> None:
    values = _floats()
    payloads = [{"v": values[i : i + 50], "n": {"v": values[i]}} for i in range(0, len(values), 50)]
    got, want = _texts(_lines(payloads))
    assert got == want
    assert any("e+" in text for text in want)  # the one spelling msgspec writes otherwise: pydantic's kept


def test_a_chunk_with_one_big_float_keeps_the_fast_text_of_the_others() -> None:
    payloads: list[dict[str, Any]] = [{"n": n, "id": "3e5f-ab12"} if n % 3 else {"n": n} for n in range(30)]
    payloads[7] = {"big": 2.5e17, "small": 2.5e-7, "ints": [2**64, -(2**63), 10**30]}
    got, want = _texts(_lines(payloads))
    assert got == want
    ints = "[18446744073709551616,-9223372036854775808,1000000000000000000000000000000]"
    assert got[7] == '{"big":2.5e+17,"small":2.5e-7,"ints":' + ints + "}"


def test_every_recorded_event_is_written_as_pydantic_writes_it() -> None:
    for lines in _recorded_runs():
        got, want = _texts(lines)
        assert got == want


def test_the_store_binds_the_texts_a_chunk_gives() -> None:
    events = [Event(seq=n, ts=TS + n, kind="log", payload={"n": n}) for n in range(3)]
    rows = event_rows(EventChunk(events, ["{}", '{"given":1}', '{"given":2}']), pk=1)
    assert [row[-1] for row in rows] == ["{}", '{"given":1}', '{"given":2}']
    assert [row[-1] for row in event_rows(events, pk=1)] == ['{"n":0}', '{"n":1}', '{"n":2}']
    with pytest.raises(ValueError, match="one text per event"):
        event_rows(EventChunk(events, ["{}"]), pk=1)


EDGE_PAYLOADS: list[dict[str, Any]] = [
    {},
    {"float": 1e16, "neg": -2.5e300, "tiny": 1e-7, "zero": -0.0, "pi": 3.141592653589793},
    {"hex": "3e5f", "uuid": "0e8e4b1e-9f0e-4e1c-8e2e-1e9e0e7e6e5e", "words": "5e5 and 7E7"},
    {"text": "caf\u00e9 \u2603 \U0001f600 \u2028 \x7f", "nul": "a\x00b", "ctl": "\b\f\n\r\t\x01\x1f", "q": '"\\/'},
    {"nested": {"a": [1, [2, [3, {"b": None, "c": True, "d": False}]]]}, "big": 123456789012345678901234567890},
    {"status": 503, "level": "error", "url": "http://x.test/a?b=c&d=1e9"},
]


def test_a_bundle_stores_the_same_payload_bytes_as_pydantic_writes(store: SqliteTraceStore) -> None:
    events = [
        {"seq": n, "ts": TS + n, "kind": "network.response" if n == 5 else "log", "payload": p}
        for n, p in enumerate(EDGE_PAYLOADS * 3)
    ]
    trace_id, _ = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(summary(scenario_slug="payload-bytes"), events))
    stored = store.stored_events(LOCAL_ORG_ID, trace_id)
    want = [pydantic_core.to_json(Event.model_validate(e).payload).decode() for e in events]
    assert stored.column("payload_text") == want
    assert [e.payload for e in stored] == [Event.model_validate(e).payload for e in events]


def test_a_float_out_of_range_leaves_the_chunk_to_pydantic_as_before() -> None:
    for number in (b"1e400", b"-1e400"):
        line = b'{"seq": 1, "ts": 1, "kind": "log", "payload": {"n": ' + number + b"}}\n"
        assert _fast_events(b"[" + line + b"]", 1, -1) is None
    got, want = _texts(_lines([{"tiny": 1e-320, "n": 1}, {"n": 2}]))  # (1e-400 reads as 0.0 either way)
    assert got == want
