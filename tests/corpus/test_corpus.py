"""The detectors on the recorded corpus of real runs (tests/corpus: recordings of three small web apps,
two Playwright Test apps and two agents, none of which the detectors were written against), read from
the checked-in recordings — nothing is re-recorded here (scripts/record_corpus.py does that).

Each recording goes in through the real ingest paths (`POST /v1/traces/ingest` for a trace.zip, with the
Playwright Test result beside it; `POST /otlp/v1/traces` for an agent run's OTLP/JSON export) into a real
store, then `debug_run` (no model) answers for it through the MCP SDK's in-memory client. Its top
finding is compared with the label written before the detectors ran (tests/corpus/labels.json).

Targets, per source (web, pwtest, agent): top label right ≥ 95 %, critical step right ≥ 95 %, no passing
control with any finding of confidence ≥ 0.5, every answer within the 2,000-token default; and over the
whole corpus, findings with confidence ≥ 0.8 are right (label and step of the case) ≥ 95 % of the time.
The table of figures is printed, and is the failure message when a target is missed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client

from molar_mcp.api.telemetry import RateLimits
from molar_mcp.compose import Embedded, open_embedded
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET, estimate_tokens
from tests.corpus.cases import Case, all_cases

pytestmark = pytest.mark.anyio

CORPUS = Path(__file__).resolve().parent
RECORDINGS = CORPUS / "recordings"
SOURCES = ("web", "pwtest", "agent")
TARGET = 0.95
SURE = 0.8  # findings this confident must be right
EXPLAINS = 0.5  # a control may have no finding this confident


@dataclass
class Answer:
    case: Case
    trace: str
    status: str
    findings: list[dict[str, Any]]
    tokens: int


@dataclass
class Corpus:
    embedded: Embedded
    answers: list[Answer]


@dataclass
class Tally:
    failing: int = 0
    label_right: int = 0
    step_right: int = 0
    controls: int = 0
    controls_flagged: int = 0
    max_tokens: int = 0
    misses: list[str] = field(default_factory=list)


def test_the_manifest_is_what_the_generator_writes() -> None:
    """labels.json is written by scripts/record_corpus.py from tests/corpus/cases.py; every case has its
    recording, and the corpus is as large as promised (≥ 60 failing runs, ≥ 2 apps per source)."""
    written = json.loads((CORPUS / "labels.json").read_text(encoding="utf-8"))["cases"]
    assert written == [c.as_json() for c in all_cases()]
    cases = all_cases()
    assert sum(c.failing for c in cases) >= 60
    for source in SOURCES:
        apps = {c.app for c in cases if c.source == source and c.failing}
        assert len(apps) >= 2, (source, apps)
        assert any(not c.failing for c in cases if c.source == source)
    for c in cases:
        assert recording(c).exists(), f"{c.id}: no recording (run scripts/record_corpus.py)"


def recording(c: Case) -> Path:
    base = RECORDINGS / c.source / c.app
    if c.source == "web":
        return base / f"{c.name}.zip"
    if c.source == "pwtest":
        return base / c.name / "result.json"
    return base / f"{c.name}.otlp.json"


async def ingest(http: httpx2.AsyncClient, c: Case) -> str:
    """Store one recording through the route a user's upload takes; returns the trace id."""
    path = recording(c)
    if c.source == "agent":
        before = {
            t["id"] for t in (await http.get("/v1/traces", params={"source": "agent", "limit": 200})).json()["items"]
        }
        resp = await http.post(
            "/otlp/v1/traces", content=path.read_bytes(), headers={"content-type": "application/json"}
        )
        assert resp.status_code == 200, resp.text
        after = (await http.get("/v1/traces", params={"source": "agent", "limit": 200})).json()["items"]
        new = [t["id"] for t in after if t["id"] not in before]
        assert len(new) == 1, (c.id, new)
        # The receiver answers first and finishes the run (layout, detectors) right after: wait for it.
        deadline = time.monotonic() + 30
        while (await http.get(f"/v1/traces/{new[0]}")).json()["status"] == "running":
            assert time.monotonic() < deadline, f"{c.id}: the agent run was never finished"
            await anyio.sleep(0.02)
        return str(new[0])
    form: dict[str, str] = {"format": "playwright-trace"}
    if c.source == "web":  # a library trace names no test: the case is its scenario
        form["scenario_slug"] = c.id.replace("/", "-")
        data = path.read_bytes()
    else:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        form["result"] = json.dumps(recorded["result"])
        data = (path.parent / "trace.zip").read_bytes()
    resp = await http.post("/v1/traces/ingest", files={"file": ("trace.zip", data, "application/zip")}, data=form)
    assert resp.status_code == 201, (c.id, resp.text)
    return str(resp.json()["trace_id"])


def step_title(detail: dict[str, Any], step: int) -> str:
    return next(
        (str(s.get("title") or "") for s in detail["steps"] if s["step"] == step and s.get("depth", 0) == 0), ""
    )


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def corpus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Corpus]:
    """Every case ingested into one store and answered by `debug_run` (no model), once per module."""
    out: list[Answer] = []
    # A CI run uploads a whole corpus at once: the per-minute limits are an operator's setting.
    limits = RateLimits(read=100_000, write=10_000, ingest=10_000)
    with open_embedded(tmp_path_factory.mktemp("corpus") / "data", rate_limits=limits) as emb:
        yield Corpus(emb, await _answer_all(emb, out))


@pytest.fixture(scope="module")
def answers(corpus: Corpus) -> list[Answer]:
    return corpus.answers


async def _answer_all(emb: Embedded, out: list[Answer]) -> list[Answer]:
    async with emb.client_factory()() as api:
        http = api._http
        server = create_mcp_server(emb.client_factory())
        async with Client(server) as client:
            for c in all_cases():
                trace = await ingest(http, c)
                detail = (await http.get(f"/v1/traces/{trace}")).json()
                if c.step is not None:  # the label's own check: its step is the action it names
                    title = step_title(detail, c.step)
                    assert c.action, c.id
                    assert c.action in title, f"{c.id}: step {c.step} is {title!r}, not {c.action!r}"
                result = await client.call_tool("debug_run", {"trace_id": trace})
                assert not result.is_error, (c.id, result.content)
                view = result.structured_content or {}
                text = "".join(getattr(b, "text", "") for b in result.content)
                # a model is shown the larger of the text and the structured content
                tokens = max(estimate_tokens(text), estimate_tokens(json.dumps(view, ensure_ascii=False)))
                out.append(Answer(c, trace, str(detail["status"]), list(view.get("findings") or []), tokens))
    return out


def right(a: Answer, f: dict[str, Any]) -> bool:
    return a.case.label is not None and (f["label"], f["critical_step"]) == (a.case.label, a.case.step)


def table(answers: list[Answer]) -> tuple[str, dict[str, Tally], tuple[int, int]]:
    tallies = {s: Tally() for s in SOURCES}
    sure = sure_right = 0
    for a in answers:
        t = tallies[a.case.source]
        t.max_tokens = max(t.max_tokens, a.tokens)
        for f in a.findings:
            if f["confidence"] >= SURE:
                sure += 1
                sure_right += right(a, f)
        top = a.findings[0] if a.findings else None
        if not a.case.failing:
            t.controls += 1
            flagged = [f for f in a.findings if f["confidence"] >= EXPLAINS]
            if flagged or a.status != "passed":
                t.controls_flagged += 1
                t.misses.append(
                    f"{a.case.id}: control ({a.status}) has {flagged[0]['label'] if flagged else 'no finding'}"
                )
            continue
        t.failing += 1
        label_ok = top is not None and top["label"] == a.case.label
        step_ok = top is not None and top["critical_step"] == a.case.step
        t.label_right += label_ok
        t.step_right += step_ok
        if not (label_ok and step_ok):
            got = f"{top['label']} step {top['critical_step']} ({top['confidence']})" if top else "nothing"
            t.misses.append(f"{a.case.id}: expected {a.case.label} step {a.case.step}, got {got}")
    lines = ["source  failing  top label      critical step  controls flagged  max tokens"]
    for s, t in tallies.items():
        lines.append(
            f"{s:<7} {t.failing:>7}  {t.label_right:>3} ({pct(t.label_right, t.failing):>6})  "
            f"{t.step_right:>3} ({pct(t.step_right, t.failing):>6})  "
            f"{t.controls_flagged:>2} of {t.controls:<11}  {t.max_tokens:>6}"
        )
    lines.append(f"findings with confidence >= {SURE}: {sure_right} of {sure} right ({pct(sure_right, sure)})")
    for t in tallies.values():
        lines += [f"  miss: {m}" for m in t.misses]
    return "\n".join(lines), tallies, (sure_right, sure)


def pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "-"


async def test_the_detectors_meet_their_targets_on_every_source(answers: list[Answer]) -> None:
    text, tallies, (sure_right, sure) = table(answers)
    print("\n" + text)
    for source, t in tallies.items():
        assert t.failing, f"{source}: no failing case\n{text}"
        assert t.label_right / t.failing >= TARGET, f"{source}: top label below target\n{text}"
        assert t.step_right / t.failing >= TARGET, f"{source}: critical step below target\n{text}"
        assert t.controls_flagged == 0, f"{source}: a passing control has a finding\n{text}"
        assert t.max_tokens <= DEFAULT_TOKEN_BUDGET, f"{source}: an answer is over the budget\n{text}"
    assert sure, f"no finding with confidence >= {SURE}\n{text}"
    assert sure_right / sure >= TARGET, f"confidence >= {SURE} is not calibrated\n{text}"


async def test_one_cause_in_several_recorded_tests_is_one_incident(corpus: Corpus) -> None:
    """Incidents group the corpus's failures by cause across runs and tests: the board's and the clinic's
    scenarios were recorded twice (Python playwright, Playwright Test), so each of their causes is one
    incident naming both tests; the locked task's 409 struck four tests at steps 3 and 4; a timeout's
    cause names its element and why (two different click timeouts are two incidents)."""
    async with corpus.embedded.client_factory()() as api:
        page = (await api._http.get("/v1/incidents", params={"limit": 100})).json()
    assert page["next_cursor"] is None
    by_cause = {i["signature"].split(": ", 1)[1]: i for i in page["items"]}
    locked = by_cause["http 409 POST /api/tasks/locked/close"]
    assert (locked["trace_count"], locked["test_count"]) == (4, 4)
    assert sorted(locked["tests"]) == [
        "chromium-board-spec-js-board-avatar-404-then-409",
        "chromium-board-spec-js-board-close-409",
        "web-board-avatar-404-then-409",
        "web-board-close-409",
    ]
    assert by_cause["timeout click #archive covered"]["test_count"] == 2
    assert by_cause["timeout click #save disabled"]["test_count"] == 2
    # An agent's runs are one test (the agent); two of the reviewer's runs hit the same rate limit.
    assert by_cause["tool post_comment is_error"]["tests"] == ["review-agent.code-reviewer"]
    assert by_cause["rate-limit gpt-4.1-mini"]["test_count"] == 2  # both agents, one model's limit
    # Each agent's own step limit: two incidents, each naming its agent.
    assert by_cause["max-steps travel-booker"]["tests"] == ["travel-agent.travel-booker"]
    assert by_cause["max-steps code-reviewer"]["tests"] == ["review-agent.code-reviewer"]
    for incident in page["items"]:
        tests = incident["tests"]
        if any(t.startswith(("web-board-", "web-clinic-")) for t in tests):
            assert incident["test_count"] == incident["trace_count"] == len(tests)  # one failure per test
            assert any(t.startswith("chromium-") for t in tests), incident  # and its Playwright Test twin
