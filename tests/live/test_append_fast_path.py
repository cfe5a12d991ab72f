"""An append body of the usual shape — `{"events": [...]}`, every item a valid event without a key — is
parsed and validated from its bytes in one call (`api/live.py _fast_validated`); every other body goes the
full way (`json.loads` with the JSON limits, then item by item). Where the fast way takes a body, it gives
the events the full way gives (values and the fields that were set); it declines every body the full way
refuses or reads differently, so those answer as before: the nesting limit (64 levels, the limit itself
taken), integers beyond 64 bits, other members, keys, a single event, invalid items, encodings.

The fast way tries msgspec first (`_decoded`: strict JSON types, into `EventIn`s, no model built), then
pydantic (lax: `"7"` for 7, `"true"` for true, NaN): a body either takes gives the full way's values;
what a follower is sent of an `EventIn` is its `Event` (`EventIn.to_event`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from molar_mcp.api.bodies import parse_json
from molar_mcp.api.live import _batch_items, _fast_validated, _validated
from molar_mcp.compose import Embedded
from molar_mcp.models.incoming import EventIn
from molar_mcp.models.limits import MAX_JSON_DEPTH
from molar_mcp.store.live import IncomingEvent

TS = 1_763_629_200_000


def ev(seq: int, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": TS + seq, "kind": "log", **fields}


def nested(levels: int) -> Any:
    """A payload value `levels` containers deep (lists and objects in turn)."""
    value: Any = 1
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def body_at_depth(depth: int) -> bytes:
    """A batch whose deepest container is at `depth` (the body is level 1, its list 2, the event 3, its
    payload 4)."""
    return json.dumps({"events": [ev(0, payload={"v": nested(depth - 4)})]}).encode()


def batch(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


TAKEN: list[bytes] = [
    batch(*(ev(i, step_id=f"s{i // 3}", message=f"m{i}", payload={"n": i}) for i in range(10))),
    batch(ev(0, ok=True, payload={"status": 503, "x": [1, {"y": None}], "f": 1.5, "e": -0.0})),
    json.dumps({"events": [ev(0, step=3, message="", payload={})]}).encode(),
    b'{"events": [{"seq": 1, "seq": 2, "ts": 5, "kind": "a", "kind": "b"}]}',  # duplicate members: the last
    b'{"events": [{"seq": "7", "ts": 5.0, "kind": "log", "ok": "true", "payload": {"a": NaN, "b": 1e400}}]}',
    json.dumps({"events": [ev(0, message="caf\u00e9 \u2603 \U0001f600 \x00", payload={"t": "\x00"})]}).encode(),
    json.dumps({"events": [ev(i) for i in range(1000)]}).encode(),
    body_at_depth(MAX_JSON_DEPTH),  # the limit itself is taken
    batch(*(ev(i, payload={"x": [i, {"y": "}{"}]}) for i in range(100))),  # many shallow containers: walked
    batch(*(ev(i, message="{[" * 40) for i in range(100))),  # brackets in strings only
    json.dumps(ev(0)).encode(),  # a single event object: a batch of one
    b'  {"seq": "7", "ts": 5.0, "kind": "log", "ok": "true", "step_id": "a", "payload": {"a": [1, {"b": []}]}} ',
    json.dumps(ev(0, payload={"v": nested(MAX_JSON_DEPTH - 2)})).encode(),  # alone, the limit itself is taken
    json.dumps(ev(0, message="{[" * 40, payload={"x": [{"y": "}{"}]})).encode(),
    # Lengths in characters, as pydantic counts them (64 for a kind, 128 for a step id), NUL escaped.
    batch(ev(0, kind="\U0001f600" * 64, step_id="\u00e9" * 127 + "\U0001f600", message="a\x00b")),
    batch(ev(0, kind="log\x00", step_id="s\x00", ok=False, step=None, message=None, payload={"k": "\x00"})),
    b'{"events": [{"seq": 0, "ts": 1, "kind": "log", "payload": {"f": 1e308, "g": 5e-324, "i": -922337203685477580}}]}',
    b'{"events": [{"seq": 0, "ts": 1, "kind": "log", "payload": {"a": 1, "a": 2}, "payload": {"b": 3}}]}',
    b'{"events": [{"seq": 0, "ts": 1, "kind": "log"}], "events": [{"seq": 9, "ts": 2, "kind": "x"}]}',
    b'{"events":[{"seq":922337203685477580,"ts":0,"kind":"\\u00e9\\n\\"","step":1}]}',
]

DECLINED: list[bytes] = [
    body_at_depth(MAX_JSON_DEPTH + 1),  # past the nesting limit: 400
    batch(*(ev(i, payload={"n": i}) for i in range(99)), ev(99, payload={"v": nested(MAX_JSON_DEPTH - 3)})),
    json.dumps({"events": [ev(0, payload={"n": 2**63})]}).encode(),  # beyond 64 bits: 400
    json.dumps({"events": [ev(0, payload={"n": 2**62, "s": "1234567890123456789012"})]}).encode(),  # a long run
    json.dumps({"events": [ev(0)], "more": 1}).encode(),  # another member
    json.dumps({"events": [ev(0, idempotency_key="k0")]}).encode(),  # a key: the full way
    json.dumps(ev(0, payload={"events": 1})).encode(),  # a single event with the text "events": the full way
    json.dumps(ev(0, idempotency_key="k")).encode(),  # a single event with a key
    json.dumps(ev(0, extra=1)).encode(),  # a single event with another member
    json.dumps({"seq": 0, "ts": 1}).encode(),  # a single invalid event: its reason
    json.dumps(ev(0)).encode() + b", " + json.dumps(ev(1)).encode(),  # two objects: not JSON
    json.dumps(ev(0)).encode() + b" x",
    json.dumps(ev(0, payload={"n": 2**63})).encode(),  # beyond 64 bits
    json.dumps(ev(0, payload={"v": nested(MAX_JSON_DEPTH - 1)})).encode(),  # past the nesting limit alone
    json.dumps({"events": [ev(0), {"seq": 1}]}).encode(),  # an invalid item: partial accept
    json.dumps({"events": [ev(0, extra=1)]}).encode(),
    json.dumps({"events": []}).encode(),
    json.dumps({"events": [ev(i) for i in range(1001)]}).encode(),
    batch(ev(0, kind="\U0001f600" * 65)),  # a kind past 64 characters: its reason
    batch(ev(0, step_id="x" * 129)),
    batch(ev(-1)),
    json.dumps({"events": [ev(0, step=0)]}).encode(),
    b'{"events": [{"seq": 0, "ts": 1, "kind": "log", "payload": null}]}',
    b'{"events": [{"seq": 0, "ts": 1, "kind": ""}]}',
    b'{"events": [{"seq": 0, "ts": 1, "kind": "log", "message": "\\ud800"}]}',  # a lone surrogate
    b"\xef\xbb\xbf" + json.dumps({"events": [ev(0)]}).encode(),  # a byte order mark
    json.dumps({"events": [ev(0)]}).encode("utf-16"),
    b'{"events": [',
    b"[]",
]


def _full(body: bytes) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    valid, rejected = _validated(_batch_items(parse_json(body)))
    return [(i.index, i.idempotency_key, i.event.model_dump(), i.event.model_fields_set) for i in valid], rejected


def _seen(incoming: IncomingEvent) -> tuple[Any, ...]:
    """What the store reads of an event (its values) and, for a model, the fields that were set. An
    `EventIn` has no such set: its `Event` (what a follower is sent) has every field set, as an event read
    back from the store has; nothing that reads an appended event looks at the set."""
    event = incoming.event
    if isinstance(event, EventIn):
        model = event.to_event()
        assert model.model_fields_set == set(model.model_dump())
        return (incoming.index, incoming.idempotency_key, model.model_dump())
    return (incoming.index, incoming.idempotency_key, event.model_dump(), event.model_fields_set)


@pytest.mark.parametrize("body", TAKEN, ids=range(len(TAKEN)))
def test_a_usual_body_is_taken_and_gives_the_events_the_full_way_gives(body: bytes) -> None:
    fast = _fast_validated(body)
    assert fast is not None
    got = [_seen(i) for i in fast]
    expected, rejected = _full(body)
    assert rejected == []
    if fast and isinstance(fast[0].event, EventIn):
        expected = [e[:3] for e in expected]
    assert repr(got) == repr(expected)  # repr: NaN equals itself there, and -0.0 stays -0.0


def test_strict_json_is_decoded_by_msgspec_and_lax_json_by_pydantic() -> None:
    usual = batch(*(ev(i, step_id="s", payload={"status": 200}) for i in range(100)))
    for body in (usual, json.dumps(ev(0)).encode()):
        fast = _fast_validated(body)
        assert fast is not None
        assert all(type(i.event) is EventIn for i in fast)
    for body in (TAKEN[4], TAKEN[11]):  # "7" for 7, "true" for true, NaN: msgspec declines, pydantic takes
        fast = _fast_validated(body)
        assert fast is not None
        assert all(type(i.event) is not EventIn for i in fast)


@pytest.mark.parametrize("body", DECLINED, ids=range(len(DECLINED)))
def test_every_other_body_is_declined(body: bytes) -> None:
    assert _fast_validated(body) is None


@pytest.fixture
async def http(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    async with embedded.client_factory()() as client:
        yield client._http


@pytest.mark.anyio
async def test_over_http_the_limits_answer_as_before(http: httpx2.AsyncClient) -> None:
    trace = (await http.post("/v1/traces", json={"scenario_slug": "fast-path"})).json()["id"]
    url = f"/v1/traces/{trace}/events"

    async def post(url: str, content: bytes | str) -> httpx2.Response:
        return await http.post(url, content=content, headers={"content-type": "application/json"})

    at_limit = await post(url, body_at_depth(MAX_JSON_DEPTH))
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json()["accepted"] == 1
    deeper = await post(url, body_at_depth(MAX_JSON_DEPTH + 1))
    assert deeper.status_code == 400
    assert f"nests deeper than {MAX_JSON_DEPTH} levels" in deeper.json()["message"]
    too_big = await post(url, json.dumps({"events": [ev(1, payload={"n": 2**63})]}).encode())
    assert too_big.status_code == 400
    assert "64 bits" in too_big.json()["message"]
    batch = await post(url, json.dumps({"events": [ev(s, payload={"s": s}) for s in range(1, 4)]}))
    assert batch.json() == {"accepted": 3, "duplicates": 0, "rejected": [], "last_seq": 3}
    events = (await http.get(f"/v1/traces/{trace}/events")).json()["events"]
    assert [(e["seq"], e["payload"]) for e in events[1:]] == [(1, {"s": 1}), (2, {"s": 2}), (3, {"s": 3})]
