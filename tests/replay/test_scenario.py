"""The `.molar.md` format: the shipped scenarios, the documented example, and errors with line numbers."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

from molar_mcp.demo import SCENARIOS_DIR, scenario_paths
from molar_mcp.replay.apps import DiffDoesNotApply
from molar_mcp.replay.scenario import (
    JsonExpectation,
    ScenarioError,
    StatusExpectation,
    UndefinedVariableError,
    UrlExpectation,
    apply_scenario_diff,
    load_scenario,
    parse_json_path,
    parse_scenario,
    resolve_json_path,
    substitute,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "scenario-format.md"

HEAD = "---\nslug: demo\ntitle: Demo\n---\n"


def test_the_demo_ships_at_least_four_scenarios() -> None:
    slugs = {path.name.removesuffix(".molar.md") for path in scenario_paths()}
    assert {"checkout-coupon", "billing-upgrade-webhook", "cart-basic", "checkout-plain"} <= slugs


@pytest.mark.parametrize("path", scenario_paths(), ids=lambda p: p.name)
def test_every_shipped_scenario_parses_and_its_slug_matches_its_file_name(path: Path) -> None:
    scenario = load_scenario(path)
    assert path.name == f"{scenario.slug}.molar.md"
    assert scenario.app == "demo-shop"
    assert [step.number for step in scenario.steps] == list(range(1, len(scenario.steps) + 1))


def test_the_documented_example_parses() -> None:
    example = re.search(r"````markdown\n(.*?)````", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert example is not None
    scenario = parse_scenario(example[1], source="docs/scenario-format.md")
    assert scenario.slug == "checkout-coupon"
    assert [step.title for step in scenario.steps] == [
        "Create a cart",
        "Add two mugs",
        "Apply the coupon",
        "Check out",
    ]
    assert scenario.steps[2].request.headers == []  # a body right after a blank line


def test_a_step_holds_its_request_expectations_and_captures() -> None:
    scenario = load_scenario(SCENARIOS_DIR / "billing-upgrade-webhook.molar.md")
    assert scenario.title == "Upgrade to Pro through the payment provider"
    assert scenario.base_url == "http://127.0.0.1:8000"
    assert "payment provider" in scenario.notes

    upgrade = scenario.step(3)
    assert upgrade.title == "Start the upgrade"
    assert upgrade.request.method == "POST"
    assert upgrade.request.target == "/api/billing/upgrade"
    assert upgrade.request.headers == [("Content-Type", "application/json")]
    assert upgrade.request.body == '{"account_id": "{{account_id}}", "plan": "pro"}'
    assert [c.name for c in upgrade.captures] == ["session_id"]

    webhook = scenario.step(5)
    assert webhook.expectations == []
    assert "checkout.session.completed" in webhook.notes

    back = scenario.step(7)
    status, url, message = back.expectations
    assert isinstance(status, StatusExpectation)
    assert status.status == 200
    assert isinstance(url, UrlExpectation)
    assert url.url == "/billing?upgraded=true"
    assert isinstance(message, JsonExpectation)
    assert (message.segments, message.op, message.value) == (["message"], "==", '"Welcome to Pro"')
    assert message.text == 'expect json $.message == "Welcome to Pro"'


def test_json_expectations_accept_not_equal_exists_and_backticks() -> None:
    text = HEAD + (
        "## 1. Go\n\n```http\nGET /x\n```\n\n"
        "- `expect json $.a != 1`\n"
        '* expect json $["odd key"][0] exists\n'
        "- expect json $.n=={{n}}\n"
    )
    first, second, third = parse_scenario(text).steps[0].expectations
    assert isinstance(first, JsonExpectation)
    assert first.op == "!="
    assert first.value == "1"
    assert isinstance(second, JsonExpectation)
    assert second.segments == ["odd key", 0]
    assert second.op == "exists"
    assert isinstance(third, JsonExpectation)
    assert third.value == "{{n}}"


BAD_FILES: list[tuple[str, str, int | None, str]] = [
    ("no front matter", "# Title\n", 1, "front matter"),
    ("front matter never closed", "---\nslug: a\ntitle: A\n", 1, "not closed"),
    ("unknown key", "---\nslug: a\ntitle: A\nowner: me\n---\n", 4, "unknown front-matter key `owner`"),
    ("missing slug", "---\ntitle: A\n---\n", 3, "lacks `slug:`"),
    ("bad slug", "---\nslug: Checkout Coupon\ntitle: A\n---\n", 2, "slug"),
    ("not key value", "---\nslug: a\ntitle: A\njust words\n---\n", 4, "key: value"),
    ("no steps", HEAD + "\nprose only\n", None, "at least one step"),
    ("steps out of order", HEAD + "## 2. Go\n```http\nGET /\n```\n", 5, "expected step 1"),
    ("heading not a step", HEAD + "## Setup\n", 5, "## N. Title"),
    ("step without request", HEAD + "## 1. Go\n\n- expect status 200\n", 5, "no ```http block"),
    ("second request", HEAD + "## 1. Go\n```http\nGET /\n```\n```http\nGET /\n```\n", 9, "second"),
    ("unclosed fence", HEAD + "## 1. Go\n```http\nGET /\n", 6, "never closed"),
    ("lowercase method", HEAD + "## 1. Go\n```http\nget /\n```\n", 7, "METHOD /path"),
    ("relative target", HEAD + "## 1. Go\n```http\nGET api/x\n```\n", 7, "path"),
    ("bad header", HEAD + "## 1. Go\n```http\nGET /\nnot a header\n```\n", 8, "header"),
    (
        "body not json",
        HEAD + '## 1. Go\n```http\nPOST /\n\n{"a": 1,\n "b": }\n```\n',
        10,
        "not JSON",
    ),
    ("unknown directive", HEAD + "## 1. Go\n```http\nGET /\n```\n- check it works\n", 9, "unknown directive"),
    ("bad status", HEAD + "## 1. Go\n```http\nGET /\n```\n- expect status ok\n", 9, "status code"),
    ("unknown expect", HEAD + "## 1. Go\n```http\nGET /\n```\n- expect header x\n", 9, "unknown expectation"),
    ("bad path", HEAD + "## 1. Go\n```http\nGET /\n```\n- expect json total == 1\n", 9, "starts with `$`"),
    ("bad literal", HEAD + "## 1. Go\n```http\nGET /\n```\n- expect json $.a == SAVE10\n", 9, "JSON value"),
    ("bad capture", HEAD + "## 1. Go\n```http\nGET /\n```\n- capture 1x = $.id\n", 9, "capture NAME"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_raises_scenario_error_with_its_line_number(text: str, line: int | None, fragment: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, source="bad.molar.md")
    assert caught.value.line == line
    assert fragment in caught.value.reason
    assert str(caught.value).startswith(f"bad.molar.md:{line}: " if line else "bad.molar.md: ")


def test_loading_a_bad_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.molar.md"
    path.write_text(HEAD + "## 1. Go\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"broken\.molar\.md:5: step 1 has no ```http block"):
        load_scenario(path)


def test_substitution_escapes_values_inside_json_and_rejects_undefined_names() -> None:
    variables = {"name": 'say "hi"', "qty": "2"}
    assert substitute('{"n": "{{name}}", "q": {{ qty }}}', variables, json_string=True) == (
        '{"n": "say \\"hi\\"", "q": 2}'
    )
    assert substitute("/api/{{qty}}", variables) == "/api/2"
    with pytest.raises(UndefinedVariableError) as caught:
        substitute("/api/carts/{{cart_id}}", variables)
    assert caught.value.name == "cart_id"


def test_json_paths_follow_members_indexes_and_report_missing_values() -> None:
    segments, end = parse_json_path('$.items[-1]["unit price"] == 3')
    assert segments == ["items", -1, "unit price"]
    assert end == len('$.items[-1]["unit price"]')
    document = {"items": [{"unit price": 1}, {"unit price": 3}], "none": None}
    assert resolve_json_path(document, segments) == (True, 3)
    assert resolve_json_path(document, ["none"]) == (True, None)
    assert resolve_json_path(document, ["items", 5]) == (False, None)
    assert resolve_json_path(document, ["items", "x"]) == (False, None)


def _unified(before: str, after: str, name: str = "checkout-coupon.molar.md") -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{name}", f"b/{name}"
    )
    return "".join(lines)


def test_a_scenario_diff_edits_the_scenario_text() -> None:
    before = (SCENARIOS_DIR / "checkout-coupon.molar.md").read_text(encoding="utf-8")
    after = before.replace("expect json $.total_cents == 4500", "expect json $.total_cents == 500")
    edited = apply_scenario_diff(before, _unified(before, after))
    assert edited == after
    assert "== 500" in parse_scenario(edited).step(6).expectations[1].text


def test_a_scenario_diff_whose_context_is_gone_raises_naming_the_hunk() -> None:
    before = (SCENARIOS_DIR / "checkout-coupon.molar.md").read_text(encoding="utf-8")
    after = before.replace('{"code": "SAVE10"}', '{"code": "HALF"}')
    diff = _unified(before, after)
    changed_elsewhere = before.replace("POST /api/carts/{{cart_id}}/coupon", "POST /api/v2/carts/{{cart_id}}/coupon")
    hunk = next(line for line in diff.splitlines() if line.startswith("@@"))
    with pytest.raises(DiffDoesNotApply) as caught:
        apply_scenario_diff(changed_elsewhere, diff)
    assert caught.value.hunk is not None
    assert caught.value.hunk in hunk
    assert caught.value.file == "checkout-coupon.molar.md"
    assert f"hunk {caught.value.hunk}" in str(caught.value)


def test_a_scenario_diff_that_touches_two_files_is_refused() -> None:
    diff = _unified("a\n", "b\n", "one.molar.md") + _unified("a\n", "b\n", "two.molar.md")
    with pytest.raises(DiffDoesNotApply, match="exactly one file"):
        apply_scenario_diff("a\n", diff)
