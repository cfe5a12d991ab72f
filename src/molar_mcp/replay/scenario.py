"""The `.molar.md` scenario format: parse a scenario file into typed steps.

The grammar is documented in docs/scenario-format.md; this module is its only implementation.
Parsing is pure (no I/O beyond `load_scenario` reading the file); errors carry the line number.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from molar_mcp.replay.apps import DiffDoesNotApply, apply_unified_diff

HTTP_METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
FRONT_MATTER_KEYS: tuple[str, ...] = ("slug", "title", "base_url", "app", "description")

VARIABLE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
_FRONT_LINE_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)")
_HEADING_RE = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*")
_STEP_HEADING_RE = re.compile(r"(\d+)\.\s+(\S.*)")
_BULLET_RE = re.compile(r"\s*[-*]\s+(.*)")
_REQUEST_LINE_RE = re.compile(r"([A-Za-z]+)\s+(\S+)(?:\s+HTTP/\d(?:\.\d)?)?")
_HEADER_RE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):\s*(.*)")
_STATUS_RE = re.compile(r"[1-5]\d\d")
_CAPTURE_RE = re.compile(r"capture\s+([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.+)")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX_RE = re.compile(r"\[\s*(-?\d+)\s*\]")
_QUOTED_KEY_RE = re.compile(r'\[\s*("(?:[^"\\]|\\.)*")\s*\]')

JsonPathSegment = str | int


class ScenarioError(ValueError):
    """A scenario file that does not follow the format; `line` is 1-based (None: the whole file)."""

    def __init__(self, reason: str, *, line: int | None = None, source: str = "<scenario>") -> None:
        self.reason = reason
        self.line = line
        self.source = source
        super().__init__(f"{source}:{line}: {reason}" if line is not None else f"{source}: {reason}")


class UndefinedVariableError(LookupError):
    """A `{{name}}` placeholder whose variable no earlier step captured and no caller supplied."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"undefined variable {{{{{name}}}}}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpRequest(_Model):
    """The one HTTP request of a step. Strings may hold `{{name}}` placeholders."""

    method: str
    target: str = Field(description="a path joined to the base URL (`/api/carts`) or an absolute URL")
    headers: list[tuple[str, str]] = Field(default_factory=list)
    body: str | None = Field(default=None, description="JSON text (with placeholders), or None")
    line: int


class StatusExpectation(_Model):
    kind: Literal["status"] = "status"
    text: str = Field(description="the directive as written, e.g. `expect status 200`")
    line: int
    status: int


class JsonExpectation(_Model):
    kind: Literal["json"] = "json"
    text: str
    line: int
    path: str
    segments: list[JsonPathSegment]
    op: Literal["==", "!=", "exists"]
    value: str | None = Field(default=None, description="the JSON literal (with placeholders) for == and !=")


class UrlExpectation(_Model):
    kind: Literal["url"] = "url"
    text: str
    line: int
    url: str = Field(description="the final URL after redirects: a path with query, or an absolute URL")


Expectation = Annotated[StatusExpectation | JsonExpectation | UrlExpectation, Field(discriminator="kind")]


class Capture(_Model):
    """`capture name = $.path`: store a value of the response JSON as variable `name`."""

    name: str
    path: str
    segments: list[JsonPathSegment]
    text: str
    line: int


class Step(_Model):
    number: int = Field(ge=1)
    title: str
    line: int
    request: HttpRequest
    expectations: list[Expectation] = Field(default_factory=list)
    captures: list[Capture] = Field(default_factory=list)
    notes: str = ""


class Scenario(_Model):
    slug: str
    title: str
    base_url: str | None = None
    app: str | None = None
    description: str | None = None
    notes: str = ""
    steps: list[Step]

    def step(self, number: int) -> Step:
        """The step numbered `number` (1-based); IndexError when there is none."""
        if not 1 <= number <= len(self.steps):
            raise IndexError(f"scenario {self.slug!r} has steps 1–{len(self.steps)}; there is no step {number}")
        return self.steps[number - 1]


# ---------------------------------------------------------------------------------------------------------
# Variables and JSON paths (shared with the runner)


def substitute(template: str, variables: Mapping[str, str], *, json_string: bool = False) -> str:
    """Replace every `{{name}}` by its value; `json_string` escapes values as JSON string content."""

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in variables:
            raise UndefinedVariableError(name)
        value = variables[name]
        return json.dumps(value)[1:-1] if json_string else value

    return VARIABLE_RE.sub(replace, template)


def parse_json_path(text: str) -> tuple[list[JsonPathSegment], int]:
    """Parse a path (`$`, `.key`, `[0]`, `[-1]`, `["odd key"]`) at the start of `text`.

    Returns the segments and the index where the path ends. ValueError when it is malformed.
    """
    if not text.startswith("$"):
        raise ValueError("a JSON path starts with `$`")
    segments: list[JsonPathSegment] = []
    i = 1
    while i < len(text):
        if text[i] == ".":
            key = _KEY_RE.match(text, i + 1)
            if key is None:
                raise ValueError(f"expected a key after `.` at `{text[i:]}`")
            segments.append(key[0])
            i = key.end()
        elif text[i] == "[":
            if (index := _INDEX_RE.match(text, i)) is not None:
                segments.append(int(index[1]))
                i = index.end()
            elif (quoted := _QUOTED_KEY_RE.match(text, i)) is not None:
                segments.append(json.loads(quoted[1]))
                i = quoted.end()
            else:
                raise ValueError(f'expected `[number]` or `["key"]` at `{text[i:]}`')
        else:
            break
    return segments, i


def resolve_json_path(document: Any, segments: list[JsonPathSegment]) -> tuple[bool, Any]:
    """Follow `segments` into a parsed JSON document: (True, value) or (False, None) when missing."""
    current = document
    for segment in segments:
        if isinstance(segment, int):
            if not isinstance(current, list) or not -len(current) <= segment < len(current):
                return False, None
            current = current[segment]
        else:
            if not isinstance(current, dict) or segment not in current:
                return False, None
            current = current[segment]
    return True, current


# ---------------------------------------------------------------------------------------------------------
# Parsing


def load_scenario(path: str | Path) -> Scenario:
    """Read and parse a `.molar.md` file; ScenarioError names the file and the line."""
    file = Path(path)
    return parse_scenario(file.read_text(encoding="utf-8"), source=str(file))


def parse_scenario(text: str, *, source: str = "<scenario>") -> Scenario:
    """Parse the text of a `.molar.md` scenario (docs/scenario-format.md) or raise ScenarioError."""
    return _Parser(text.splitlines(), source).parse()


class _StepDraft:
    def __init__(self, number: int, title: str, line: int) -> None:
        self.number, self.title, self.line = number, title, line
        self.request: HttpRequest | None = None
        self.expectations: list[Expectation] = []
        self.captures: list[Capture] = []
        self.notes: list[str] = []


class _Parser:
    def __init__(self, lines: list[str], source: str) -> None:
        self.lines = lines
        self.source = source

    def error(self, reason: str, line: int | None) -> ScenarioError:
        return ScenarioError(reason, line=line, source=self.source)

    def parse(self) -> Scenario:
        meta, i = self.front_matter()
        preamble: list[str] = []
        steps: list[Step] = []
        current: _StepDraft | None = None
        while i < len(self.lines):
            line, lineno = self.lines[i], i + 1
            stripped = line.strip()
            if stripped.startswith("```"):
                end = self.fence_end(i)
                if stripped[3:].strip().lower() == "http":
                    if current is None:
                        raise self.error("an ```http block belongs inside a step (`## 1. Title`)", lineno)
                    if current.request is not None:
                        raise self.error(f"step {current.number} has a second ```http block", lineno)
                    current.request = self.http_block(i + 1, end)
                else:
                    (current.notes if current else preamble).extend(self.lines[i : end + 1])
                i = end + 1
                continue
            heading = _HEADING_RE.fullmatch(stripped)
            if heading is not None and len(heading[1]) == 2:
                match = _STEP_HEADING_RE.fullmatch(heading[2])
                if match is None:
                    raise self.error(f"a step heading is `## N. Title`; got `{stripped}`", lineno)
                if current is not None:
                    steps.append(self.finish(current))
                expected = len(steps) + 1
                if int(match[1]) != expected:
                    raise self.error(f"steps are numbered 1, 2, 3…; expected step {expected}", lineno)
                current = _StepDraft(expected, match[2].strip(), lineno)
            elif current is not None and (bullet := _BULLET_RE.fullmatch(line)) is not None:
                self.directive(current, bullet[1].strip().strip("`").strip(), lineno)
            else:
                (current.notes if current else preamble).append(line)
            i += 1
        if current is not None:
            steps.append(self.finish(current))
        if not steps:
            raise self.error("a scenario needs at least one step (`## 1. Title` with an ```http block)", None)
        return Scenario(
            slug=meta["slug"],
            title=meta["title"],
            base_url=meta.get("base_url"),
            app=meta.get("app"),
            description=meta.get("description"),
            notes=_prose(preamble),
            steps=steps,
        )

    def front_matter(self) -> tuple[dict[str, str], int]:
        if not self.lines or self.lines[0].strip() != "---":
            raise self.error("a scenario starts with front matter: `---`, `key: value` lines, `---`", 1)
        meta: dict[str, str] = {}
        for i in range(1, len(self.lines)):
            line, lineno = self.lines[i].strip(), i + 1
            if line == "---":
                for key in ("slug", "title"):
                    if key not in meta:
                        raise self.error(f"the front matter lacks `{key}:`", lineno)
                return meta, i + 1
            if not line or line.startswith("#"):
                continue
            match = _FRONT_LINE_RE.fullmatch(line)
            if match is None:
                raise self.error(f"expected `key: value` in the front matter; got `{line}`", lineno)
            key, value = match[1], _unquote(match[2].strip())
            if key not in FRONT_MATTER_KEYS:
                raise self.error(f"unknown front-matter key `{key}` (known: {', '.join(FRONT_MATTER_KEYS)})", lineno)
            if key in meta:
                raise self.error(f"`{key}` is given twice", lineno)
            if key == "slug" and not _SLUG_RE.fullmatch(value):
                raise self.error("a slug is lowercase letters, digits and `-` (e.g. `checkout-coupon`)", lineno)
            if key == "base_url" and not value.startswith(("http://", "https://")):
                raise self.error("base_url is an absolute http:// or https:// URL", lineno)
            if not value:
                raise self.error(f"`{key}` is empty", lineno)
            meta[key] = value
        raise self.error("the front matter is not closed by a `---` line", 1)

    def fence_end(self, start: int) -> int:
        for j in range(start + 1, len(self.lines)):
            if self.lines[j].strip() == "```":
                return j
        raise self.error("this code block is never closed by a ``` line", start + 1)

    def http_block(self, start: int, end: int) -> HttpRequest:
        i = start
        while i < end and not self.lines[i].strip():
            i += 1
        if i == end:
            raise self.error("the ```http block is empty; it starts with `METHOD /path`", start)
        request_line = _REQUEST_LINE_RE.fullmatch(self.lines[i].strip())
        if request_line is None or request_line[1] not in HTTP_METHODS:
            methods = " | ".join(HTTP_METHODS)
            raise self.error(f"an ```http block starts with `METHOD /path` (METHOD: {methods})", i + 1)
        method, target, request_lineno = request_line[1], request_line[2], i + 1
        if not target.startswith(("/", "http://", "https://")):
            raise self.error("the request target is a path (`/api/…`) or an absolute URL", i + 1)
        headers: list[tuple[str, str]] = []
        i += 1
        while i < end and self.lines[i].strip():
            header = _HEADER_RE.fullmatch(self.lines[i].strip())
            if header is None:
                raise self.error("expected a header `Name: value`, or a blank line before the body", i + 1)
            headers.append((header[1], header[2].strip()))
            i += 1
        body_lines = self.lines[i:end]
        body = "\n".join(body_lines).strip() or None
        if body is not None:
            first = i + next(n for n, text in enumerate(body_lines) if text.strip())
            try:
                json.loads(_placeholders_as_zero(body))
            except json.JSONDecodeError as exc:
                raise self.error(f"the request body is not JSON: {exc.msg}", first + exc.lineno) from None
        return HttpRequest(method=method, target=target, headers=headers, body=body, line=request_lineno)

    def directive(self, step: _StepDraft, text: str, lineno: int) -> None:
        if text.startswith("capture "):
            step.captures.append(self.capture(text, lineno))
            return
        kind, _, arg = text.partition(" ")
        if kind != "expect":
            raise self.error(
                f"unknown directive `{text}`: step bullets are `expect …` or `capture …` "
                "(write notes as plain paragraphs)",
                lineno,
            )
        what, _, arg = arg.strip().partition(" ")
        arg = arg.strip()
        if what == "status":
            if not _STATUS_RE.fullmatch(arg):
                raise self.error("`expect status` takes an HTTP status code, e.g. `expect status 200`", lineno)
            step.expectations.append(StatusExpectation(text=text, line=lineno, status=int(arg)))
        elif what == "json":
            step.expectations.append(self.json_expectation(text, arg, lineno))
        elif what == "url":
            if not arg or " " in arg or not arg.startswith(("/", "http://", "https://")):
                raise self.error("`expect url` takes a path with query (`/billing?x=1`) or a URL", lineno)
            step.expectations.append(UrlExpectation(text=text, line=lineno, url=arg))
        else:
            raise self.error(f"unknown expectation `{text}`: use expect status | json | url", lineno)

    def json_expectation(self, text: str, arg: str, lineno: int) -> JsonExpectation:
        segments, end = self.path(arg, lineno)
        path, rest = arg[:end], arg[end:].strip()
        if rest == "exists":
            return JsonExpectation(text=text, line=lineno, path=path, segments=segments, op="exists")
        op, literal = rest[:2], rest[2:].strip()
        if op not in ("==", "!=") or not literal:
            raise self.error("write `expect json $.path == VALUE`, `!= VALUE` or `exists`", lineno)
        try:
            json.loads(_placeholders_as_zero(literal))
        except json.JSONDecodeError:
            raise self.error(f'`{literal}` is not a JSON value (90, "SAVE10", true, null, …)', lineno) from None
        return JsonExpectation(
            text=text,
            line=lineno,
            path=path,
            segments=segments,
            op="==" if op == "==" else "!=",
            value=literal,
        )

    def capture(self, text: str, lineno: int) -> Capture:
        match = _CAPTURE_RE.fullmatch(text)
        if match is None:
            raise self.error("write `capture NAME = $.path` (NAME: letters, digits, _)", lineno)
        segments, end = self.path(match[2].strip(), lineno)
        if end != len(match[2].strip()):
            raise self.error(f"unexpected text after the path in `{text}`", lineno)
        return Capture(name=match[1], path=match[2].strip(), segments=segments, text=text, line=lineno)

    def path(self, text: str, lineno: int) -> tuple[list[JsonPathSegment], int]:
        try:
            return parse_json_path(text)
        except ValueError as exc:
            raise self.error(str(exc), lineno) from None

    def finish(self, draft: _StepDraft) -> Step:
        if draft.request is None:
            raise self.error(f"step {draft.number} has no ```http block (one request per step)", draft.line)
        return Step(
            number=draft.number,
            title=draft.title,
            line=draft.line,
            request=draft.request,
            expectations=draft.expectations,
            captures=draft.captures,
            notes=_prose(draft.notes),
        )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _placeholders_as_zero(text: str) -> str:
    # `"{{id}}"` and bare `{{qty}}` are both valid JSON once a placeholder reads `0`.
    return VARIABLE_RE.sub("0", text)


def _prose(lines: list[str]) -> str:
    return "\n".join(line for line in lines if not line.startswith("# ")).strip()


# ---------------------------------------------------------------------------------------------------------
# Editing


def apply_scenario_diff(text: str, diff: str) -> str:
    """Apply a unified diff of one `.molar.md` file to `text` with `git apply` (no fuzz).

    The file name in the diff's `---`/`+++` lines is free (`a/checkout.molar.md`); the diff must
    touch exactly one file. Raises DiffDoesNotApply naming the hunk that does not apply.
    """
    names = {_diff_path(line) for line in diff.splitlines() if line.startswith(("--- ", "+++ "))}
    names.discard(None)
    if len(names) != 1:
        raise DiffDoesNotApply("scenario diff", reason="must change exactly one file (the scenario)")
    name = PurePosixPath(str(names.pop()))
    if name.is_absolute() or ".." in name.parts:
        raise DiffDoesNotApply("scenario diff", reason=f"names an unsafe path: {name}")
    with tempfile.TemporaryDirectory(prefix="molar-scenario-") as tmp:
        root = Path(tmp) / "scenario"
        target = root.joinpath(*name.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        apply_unified_diff(root, diff, label="scenario diff")
        return target.read_text(encoding="utf-8")


def _diff_path(header: str) -> str | None:
    path = header[4:].split("\t", 1)[0].strip()
    if path == "/dev/null":
        return None
    if header.startswith("--- a/") or header.startswith("+++ b/"):
        return path[2:]
    return path


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality, as a scenario's `==` check and a diff compare values: 90 == 90.0, but true is
    not 1 (Python's bool is an int)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)
