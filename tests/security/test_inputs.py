"""Careless and hostile input gets a 4xx with `{error, message}` (or the protocol's error) that a client
can act on, stores nothing half-way, and leaves no ERROR traceback in the server's log: integers past
64 bits, 100,000-deep JSON, backslashes in redirect URIs, 64 KB filters, "." as a trace id."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from molar_mcp.compose import Embedded
from molar_mcp.mcp.server import create_mcp_server
from tests.bundles import checkout_events, make_bundle
from tests.security.conftest import Secured, start_secured
from tests.servers import stop_server

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

DEEP = b"[" * 100_000 + b"]" * 100_000
TOO_BIG = 2**63
MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2026-07-28",
}


@pytest.fixture(scope="module")
def inputs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    # Limits far above what the property-based run sends: it must see the routes' answers, not 429s.
    limits = "read=100000,write=100000,ingest=100000,tool=100000"
    s = start_secured(tmp_path_factory.mktemp("inputs") / "data", "--rate-limits", limits, demo=False)
    try:
        yield s
    finally:
        stop_server(s.served)


def _client_error(response: httpx2.Response, *statuses: int) -> dict[str, str]:
    assert response.status_code in statuses, (response.status_code, response.text)
    body: dict[str, str] = response.json()
    assert body["error"]
    assert body.get("message") or body.get("error_description")
    return body


def _no_error_logged(log: Path) -> None:
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert " ERROR " not in text, text[-3000:]
    assert "ERROR:" not in text, text[-3000:]


async def test_integers_past_64_bits_are_refused_and_nothing_is_stored(inputs_server: Secured) -> None:
    async with inputs_server.http(inputs_server.key_all) as http:
        created = await http.post("/v1/traces", json={"scenario_slug": "big-ints"})
        trace = created.json()["id"]
        for field in ("seq", "ts"):
            event = {"seq": 0, "ts": 1_763_629_200_000, "kind": "log", field: TOO_BIG}
            appended = await http.post(f"/v1/traces/{trace}/events", json={"events": [event]})
            body = _client_error(appended, 400, 422)
            assert "64 bits" in body["message"] or "less than or equal" in body["message"]
        events = await http.get(f"/v1/traces/{trace}/events")
        bundle = make_bundle(events=[{**e, "ts": TOO_BIG} if e["seq"] == 3 else e for e in checkout_events()])
        files = {"bundle": ("b.tar.gz", bundle, "application/gzip")}
        ingest = await http.post("/v1/traces/ingest", files=files, data={"scenario_slug": "big-ts"})
        form = await http.post(
            "/v1/traces/ingest",
            files={"bundle": ("b.tar.gz", make_bundle(), "application/gzip")},
            data={"scenario_slug": "big-pr", "pr_number": str(TOO_BIG)},
        )
        listed = await http.get("/v1/traces", params={"scenario": "big-ts"})
    assert events.json()["total"] == 0
    _client_error(ingest, 400, 422)
    _client_error(form, 422)
    assert listed.json()["items"] == []
    _no_error_logged(inputs_server.log)


async def test_deeply_nested_json_is_a_400_everywhere(inputs_server: Secured) -> None:
    async with inputs_server.http(inputs_server.key_all) as http:
        v1 = await http.post("/v1/traces", content=DEEP, headers={"content-type": "application/json"})
        events = await http.post(
            "/v1/traces/x/events", content=b'{"events": ' + DEEP + b"}", headers={"content-type": "application/json"}
        )
        mcp = await http.post("/mcp", content=DEEP, headers=MCP_HEADERS)
    async with inputs_server.http() as anonymous:
        register = await anonymous.post(
            "/api/oauth/register", content=DEEP, headers={"content-type": "application/json"}
        )
    assert "nests deeper" in _client_error(v1, 400)["message"]
    _client_error(events, 400, 404)
    _client_error(register, 400)
    assert mcp.status_code == 400
    assert mcp.json()["error"]["code"] == -32700
    _no_error_logged(inputs_server.log)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1\\@evil.example/cb",
        "https://app.example\\evil.example/cb",
        "https://app.example/c b",
        "http://[127.0.0.1/cb",
        "https://app.example:99999/cb",
    ],
)
async def test_malformed_redirect_uris_are_refused_at_registration(inputs_server: Secured, uri: str) -> None:
    async with inputs_server.http() as anonymous:
        response = await anonymous.post("/api/oauth/register", json={"client_name": "x", "redirect_uris": [uri]})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_client_metadata"
    _no_error_logged(inputs_server.log)


async def test_long_filters_and_unknown_parameters_are_client_errors_over_rest(inputs_server: Secured) -> None:
    async with inputs_server.http(inputs_server.key_all) as http:
        long_filter = await http.get("/v1/traces", params={"q": "a" * 5000})
        unknown = await http.get("/v1/traces", params={"bogus": "1"})
    _client_error(long_filter, 400, 414, 431)
    assert "bogus" in _client_error(unknown, 400)["message"]
    _no_error_logged(inputs_server.log)


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_mcp_tools_answer_bad_arguments_with_errors_a_model_can_act_on(embedded: Embedded, mode: str) -> None:
    server = create_mcp_server(embedded.client_factory())
    async with Client(server, mode=mode) as client:
        dot = await client.call_tool("get_trace", {"trace_id": "."})
        long_filter = await client.call_tool("list_traces", {"scenario": "a" * 65536})
        long_q = await client.call_tool("list_traces", {"q": "a" * 65536})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(MCPError) as prompt:
                await client.get_prompt("no-such-prompt")
    for result in (dot, long_filter, long_q):
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "validation errors for TraceDetail" not in text
        assert "InvalidURL" not in text
    assert "no trace" in dot.content[0].text.lower()  # type: ignore[union-attr]
    assert prompt.value.error.code == INVALID_PARAMS


# -- A bounded property-based run of schemathesis over /openapi.json -------------------------------

EXAMPLES = {"key": 12, "none": 4}  # per operation; derandomized, so every run sends the same cases


def _fuzz(base: str, key: str | None, examples: int, real_trace: str) -> tuple[int, list[str]]:
    """Every operation of the served document, `examples` cases each (some on a real trace): the
    number of requests sent, and every 5xx or answer that does not match the documented schema."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
        # 501 is an answer, not a failure, where the document says so: a route this server's configuration
        # does not offer (direct uploads without an object store). Every other 5xx fails.
        if response.status_code == 501 and "501" in case.operation.definition.raw.get("responses", {}):
            return None
        return not_a_server_error(ctx, response, case)

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    sent = 0
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), on_real=st.booleans())
        def run(case: Any, on_real: bool) -> None:
            nonlocal sent
            if on_real and "trace_id" in (case.path_parameters or {}):
                case.path_parameters["trace_id"] = real_trace
            sent += 1
            response = case.call(base_url=base, headers=headers, timeout=20)
            case.validate_response(response, checks=[no_server_error, response_schema_conformance])

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports failures as a group
            parts = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
            problems.append(f"{label}: " + " | ".join(str(part)[:1500] for part in parts))
    return sent, problems


def test_a_property_based_run_over_the_openapi_document_finds_no_5xx_and_no_schema_violation(
    inputs_server: Secured,
) -> None:
    bundle = make_bundle(events=checkout_events())
    stored = httpx2.post(
        f"{inputs_server.base}/v1/traces/ingest",
        headers={"authorization": f"Bearer {inputs_server.key_all}"},
        data={"scenario_slug": "fuzzed"},
        files={"bundle": ("b.tar.gz", bundle, "application/gzip")},
        timeout=60,
    )
    assert stored.status_code == 201, stored.text
    real = stored.json()["short_id"]
    with_key, found_with_key = _fuzz(inputs_server.base, inputs_server.key_all, EXAMPLES["key"], real)
    without, found_without = _fuzz(inputs_server.base, None, EXAMPLES["none"], real)
    print(f"schemathesis: {with_key} requests with a key, {without} without")
    assert found_with_key == []
    assert found_without == []
