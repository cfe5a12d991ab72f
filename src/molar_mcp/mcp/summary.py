"""`get_trace`'s summary of one run, rendered once and cut to a token budget by arithmetic.

Every part that a cut may drop (a step, a failed event, an artifact) is rendered once, in both forms it is
sent in (its text and its structured JSON, and an artifact's resource link), and its tokens are estimated
once, per form. Fitting to a budget is then arithmetic: per form, a sum of the frame (header, failure, event
counts), the parts kept and the notes that say what was cut (short, estimated for the sizes tried); the
answer costs the larger of the text's sum and the structured content's (a model is shown one of them,
`tokens.shown`) plus the resource links. The answer is built once, for the sizes chosen.

Why a sum of parts is an upper bound of the whole: the estimator (`tokens.py`) counts units — a run of
letters, a run of digits, a newline, a punctuation mark; joining texts can merge two runs into one but
never split one, so the whole never costs more than its parts. The joiners themselves (a comma between
JSON items, a newline between lines) are counted with each part.

What is cut, in order: failed events down to one (the event the failure names is kept longest: the decisive
evidence; then the failing step's others, its last first), artifacts down to two (a Playwright trace's zip
and its failure screenshot), the steps overview down to one (a window around the failing step), the
remaining artifacts, the last failed event, the last step. A budget that still does not hold the rest then
gets a tighter frame: the failure's message, expected and actual cut shorter (each with the call that
returns the event whole), then the events by kind left out too. Each cut says what went and which call
brings it back (`omitted`). The least budget a tool accepts holds the tightest frame of any run whose
recorded names fit their limits; a run whose frame still does not fit is answered with the budget it needs
(`TraceSummary.fit` returns more than asked, and `get_trace` refuses with that figure).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from molar_mcp.mcp.fence import defuse, fence
from molar_mcp.mcp.render import (
    MESSAGE_CHARS,
    VALUE_CHARS,
    artifact_uri,
    cut_title,
    event_line,
    event_row,
    failures_of,
    header,
    link_block,
    structured,
)
from molar_mcp.mcp.tokens import (
    NOTHING,
    Cost,
    add_costs,
    estimate_tokens,
    json_text,
    json_tokens,
    model_tokens,
    prefix_costs,
    shown,
)
from molar_mcp.mcp.views import Artifact, StepRow, TraceView
from molar_mcp.models import Event, TraceDetail
from molar_mcp.models.rows import trusted

NOTABLE_SHOWN = 12
ARTIFACTS_SHOWN = 8
RUN_FENCE = "recorded run"
ARTIFACT_FENCE = "artifacts"
STEP_TITLE_CHARS = 80
# The tighter frames' cuts of the failure: its message, and its expected and actual values.
TIGHT_MESSAGE_CHARS = 120
TIGHT_VALUE_CHARS = 60


def _digit_tokens(n: int) -> int:
    """Tokens of an integer as JSON writes it: a token per 3 digits, one for a minus sign."""
    return (len(str(abs(n))) + 2) // 3 + (n < 0)


_STEP_FIELDS = {name: estimate_tokens(json.dumps(name) + ":") for name in StepRow.model_fields}


# Steps whose costs the process keeps: a step's cost is a function of its values alone, and a trace read
# again (its summary, then its steps' pages; every agent asking why the same run failed) has the same steps.
STEP_COSTS_KEPT = 4096


def step_costs(row: StepRow) -> tuple[int, int]:
    """A step's tokens as text (its mark in the `Steps:` line) and as JSON (`model_dump_json(exclude_none=
    True)`), counted as the estimator counts them without rendering the step: every key, value and
    punctuation mark of a JSON object is its own unit or run, so the whole is the sum of its pieces; only
    the title (any text) is estimated, as JSON writes it (tests/mcp/test_summary_fit.py checks both
    against the estimator on the rendered forms). Once per process for the last `STEP_COSTS_KEPT` steps."""
    return cached_step_costs(row.step, row.path, row.title, row.ok, row.events)


@functools.lru_cache(maxsize=STEP_COSTS_KEPT)
def cached_step_costs(step: int, path: str | None, title: str | None, ok: bool | None, events: int) -> tuple[int, int]:
    key = path or str(step)
    text = (_digit_tokens(step) if path is None else estimate_tokens(key)) + 1  # the mark: one character
    fields = 2  # the fields present: step and events always
    data = 2 + _STEP_FIELDS["step"] + _digit_tokens(step) + _STEP_FIELDS["events"] + _digit_tokens(events)
    if path is not None:
        fields += 1
        data += _STEP_FIELDS["path"] + estimate_tokens(json_text(path))
    if title is not None:
        fields += 1
        data += _STEP_FIELDS["title"] + estimate_tokens(json_text(title))
    if ok is not None:
        fields += 1
        data += _STEP_FIELDS["ok"] + (1 if ok else 2)  # true, false
    return text, data + fields - 1  # braces above, commas between fields here


def _step_key(s: StepRow) -> str:
    """How a step is named: its number at the top level, its path inside another step."""
    return s.path or str(s.step)


def _step_mark(s: StepRow) -> str:
    return f"{_step_key(s)}{'✓' if s.ok else '✗' if s.ok is False else '·'}"


def trace_text(view: TraceView) -> str:
    """The text block of a summary. What runs recorded (the test's name and title, the failure signature,
    the failing step's title, its message, expected and actual, the failed events) is fenced as data."""
    t = view.trace
    dur = f", {t.duration_ms / 1000:.1f}s" if t.duration_ms is not None else ""
    lines = [
        f"Trace {t.short_id} {t.status.upper()} ({t.source or 'unknown source'}, commit {t.code_sha or '?'}, "
        f"{t.created_at}{dur}, {t.event_count} events)"
    ]
    if t.history:
        lines.append(f"History of this test: {t.history}")
    if t.spans_waiting:
        lines.append(
            f"Not shown yet: {t.spans_waiting} spans received (a run that exports 512+ spans at a time while "
            "nobody follows it is laid out once, when it ends; read it again then)."
        )
    if t.parent_trace_id:
        lines.append(f"Replay of {t.parent_trace_id} from step {t.replay_from_step}")
    recorded = [f"test: {t.scenario} “{t.title}”"]
    if t.failure_signature:
        recorded.append(f"failure signature: {t.failure_signature}")
    f = view.failure
    if f is not None:
        where = f"step {f.step}" if f.step is not None else "the run"
        if f.seq is None:
            lines.append(f"Failed at {where}: no failed event recorded")
        else:
            lines.append(f"Failed at {where}: {f.kind} (seq {f.seq})")
        if f.step is not None:
            recorded.append(f"step {f.step} “{f.step_title}”")
        if f.message:
            recorded.append(f.message)
        if f.expected is not None or f.actual is not None:
            recorded.append(f"expected {f.expected!s} — actual {f.actual!s}")
    lines.append(fence("\n".join(recorded), RUN_FENCE))
    if f is not None and f.recovered:
        lines.append(f"Failed earlier, and the run went on (not the final failure): steps {', '.join(f.recovered)}")
    if view.steps:
        lines.append("Steps: " + " ".join(_step_mark(s) for s in view.steps))
    if view.event_counts:
        lines.append("Events by kind: " + ", ".join(f"{k} {n}" for k, n in view.event_counts.items()))
    if view.notable:
        lines.append("Failed events:")
        lines.append(fence("\n".join(event_line(e) for e in view.notable), "failed events"))
    if view.artifacts:
        # An artifact's name is what the run recorded (a file name, an attachment's title): fenced as data.
        lines.append("Artifacts:")
        lines.append(fence("\n".join(_artifact_piece(a) for a in view.artifacts), ARTIFACT_FENCE))
    lines.extend(f"Left out: {o}" for o in view.omitted)
    return "\n".join(lines)


# What a part's lines cost beside its items (its heading and fence), in the text only.
_STEPS_WRAPPER: Cost = (estimate_tokens("\nSteps: "), 0, 0)
_NOTABLE_WRAPPER: Cost = (estimate_tokens("\nFailed events:\n" + fence("", "failed events")), 0, 0)
_ARTIFACTS_WRAPPER: Cost = (estimate_tokens("\nArtifacts:\n" + fence("", ARTIFACT_FENCE)), 0, 0)


def _artifact_piece(a: Artifact) -> str:
    return f"- {a.kind} {a.name} {a.uri}" if a.name else f"- {a.kind} {a.uri}"


def _minus(a: Cost, b: Cost) -> Cost:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _tokens(c: Cost) -> int:
    """What a cost comes to as a model is shown it: the larger form, and the links."""
    return shown(c[0], c[1]) + c[2]


@dataclass(frozen=True)
class Fitted:
    view: TraceView
    text: str
    tokens: int  # an upper bound of what the view and text cost (text, structured content, artifact links)


class TraceSummary:
    """The parts of one run's summary, each rendered and estimated once; `fit` cuts them to a budget."""

    def __init__(self, detail: TraceDetail, failing: Sequence[Event], failing_total: int) -> None:
        self.sid = sid = detail.short_id
        self.failing_total = failing_total
        self.failure, tight_failure = failures_of(
            detail, failing, [(MESSAGE_CHARS, VALUE_CHARS), (TIGHT_MESSAGE_CHARS, TIGHT_VALUE_CHARS)]
        )
        self.focus = self.failure.step if self.failure is not None else None
        self.note_costs: dict[str, Cost] = {}
        # From the store's validated steps (and our cut of a title): not validated again.
        self.steps = [
            trusted(
                StepRow,
                {
                    "step": s.step,
                    "path": s.path if s.depth else None,
                    "title": cut_title(s.title, STEP_TITLE_CHARS),
                    "ok": s.ok,
                    "events": s.event_count,
                },
            )
            for s in detail.steps
        ]
        self.focus_index = next((i for i, s in enumerate(self.steps) if s.step == self.focus and s.path is None), 0)
        self.artifacts = [
            Artifact(kind=a.kind, name=a.name, size=a.size, uri=artifact_uri(detail.id, a.sha256))
            for a in detail.artifacts
        ]
        # Failed events in the order a cut keeps them: the one the failure names (its decisive event), the
        # failing step's others, its last first, then the rest.
        rows = [event_row(e, sid) for e in failing]
        decisive = self.failure.seq if self.failure is not None else None
        named = [i for i, e in enumerate(failing) if decisive is not None and e.seq == decisive]
        in_step = [i for i, e in enumerate(failing) if self.focus is not None and e.step == self.focus]
        first = named + [i for i in in_step[::-1] if i not in named]
        taken = set(first)
        self.notable_order = first + [i for i in range(len(rows)) if i not in taken]
        self.notable = rows
        base = TraceView(trace=header(detail), failure=self.failure, event_counts=detail.event_counts)
        # The frames, loosest first: as is; the failure cut shorter; and without the events by kind.
        tight = base.model_copy(update={"failure": tight_failure})
        self.frames: list[tuple[TraceView, list[str]]] = [(base, [])]
        if tight.failure != base.failure:
            self.frames.append((tight, []))
        if detail.event_counts:
            self.frames.append(
                (tight.model_copy(update={"event_counts": {}}), [f"events by kind; molar://traces/{sid} has them"])
            )
        self.frame_costs: dict[int, Cost] = {}
        self.frame: Cost = NOTHING
        self._use_frame(0)

        # Each part once: its text (and its joiner) and its JSON (and the comma after it).
        self.step_prefix = prefix_costs([(text, data + 1, 0) for text, data in map(step_costs, self.steps)])
        self.step_failed = [0, *accumulate(1 if s.ok is False else 0 for s in self.steps)]
        self.steps_wrapper = _STEPS_WRAPPER
        self.notable_prefix = prefix_costs(
            [
                (estimate_tokens(defuse(event_line(rows[i]))) + 1, model_tokens(rows[i]) + 1, 0)
                for i in self.notable_order
            ]
        )
        self.notable_wrapper = _NOTABLE_WRAPPER
        self.artifact_prefix = prefix_costs(
            [
                (estimate_tokens(defuse(_artifact_piece(a))) + 1, model_tokens(a) + 1, json_tokens(link_block(a)))
                for a in self.artifacts
            ]
        )
        self.artifacts_wrapper = _ARTIFACTS_WRAPPER

    def _use_frame(self, level: int) -> None:
        """Fit with the frame at `level` (each frame's cost estimated once)."""
        self.base, self.frame_notes = self.frames[level]
        if (frame := self.frame_costs.get(level)) is None:
            frame = self.frame_costs[level] = (
                estimate_tokens(trace_text(self.base)),
                json_tokens(structured(self.base)),
                0,
            )
        self.frame = frame

    # ---- the sizes' costs ------------------------------------------------------------------------

    def _window_start(self, n: int) -> int:
        """Where `n` steps around the failing step start (biased towards what led up to it)."""
        if len(self.steps) <= n or self.focus is None:
            return 0
        return max(0, min(self.focus_index - (n * 2) // 3, len(self.steps) - n))

    def _steps_cost(self, n: int) -> Cost:
        if n == 0:
            return NOTHING
        start = self._window_start(n)
        return add_costs(_minus(self.step_prefix[start + n], self.step_prefix[start]), self.steps_wrapper)

    def _notable_cost(self, n: int) -> Cost:
        return add_costs(self.notable_prefix[n], self.notable_wrapper) if n else NOTHING

    def _artifacts_cost(self, n: int) -> Cost:
        return add_costs(self.artifact_prefix[n], self.artifacts_wrapper) if n else NOTHING

    def _notes(self, n_steps: int, n_notable: int, n_artifacts: int) -> list[str]:
        """What a summary of these sizes leaves out, and the call that brings each back."""
        sid, omitted = self.sid, []
        total = len(self.steps)
        if n_steps < total:
            start = self._window_start(n_steps)
            shown = self.steps[start : start + n_steps]
            failed_hidden = self.step_failed[-1] - (self.step_failed[start + n_steps] - self.step_failed[start])
            which = (
                f"{total - n_steps} of {total} steps outside steps {_step_key(shown[0])}–{_step_key(shown[-1])}"
                if shown
                else f"the steps overview: {total} steps"
            )
            omitted.append(
                f'{which} ({failed_hidden} of them failed); get_trace(trace_id="{sid}", step=N) shows any step'
            )
        if self.failing_total > n_notable:
            more = " more" if n_notable else ""
            omitted.append(
                f"{self.failing_total - n_notable}{more} failed events; read "
                f"molar://traces/{sid}/events?ok=false for all of them"
            )
        if n_artifacts < len(self.artifacts):
            omitted.append(f"{len(self.artifacts) - n_artifacts} artifacts; molar://traces/{sid} lists them all")
        if self.focus is not None:
            # With failed events shown, what they leave out is their details; with none, the events themselves.
            call = f'get_trace(trace_id="{sid}", step={self.focus})'
            omitted.append(
                f"event details; {call} shows the failing step's events"
                if n_notable
                else f"the failing step's events; {call} shows them"
            )
        return [*omitted, *self.frame_notes]

    def _notes_cost(self, notes: list[str]) -> Cost:
        total = NOTHING
        for note in notes:
            if (spent := self.note_costs.get(note)) is None:
                spent = self.note_costs[note] = (estimate_tokens("\nLeft out: " + note), json_tokens(note) + 1, 0)
            total = add_costs(total, spent)
        return total

    def _parts_cost(self, sizes: list[int]) -> Cost:
        return add_costs(
            add_costs(self._steps_cost(sizes[0]), self._notable_cost(sizes[1])), self._artifacts_cost(sizes[2])
        )

    def _within(self, sizes: list[int], notes: Cost) -> int:
        return _tokens(add_costs(add_costs(self.frame, self._parts_cost(sizes)), notes))

    def cost(self, sizes: list[int]) -> int:
        return self._within(sizes, self._notes_cost(self._notes(*sizes)))

    # ---- fitting ---------------------------------------------------------------------------------

    def sizes(self, budget: int) -> list[int]:
        """How many steps, failed events and artifacts fit in `budget` tokens, cutting in order down
        to each part's floor."""
        sizes = [len(self.steps), min(len(self.notable), NOTABLE_SHOWN), min(len(self.artifacts), ARTIFACTS_SHOWN)]
        for part, floor in ((1, 1), (2, 2), (0, 1), (2, 0), (1, 0), (0, 0)):
            if self.cost(sizes) <= budget:
                break
            # The parts alone must fit in what the frame and the notes leave; the notes (their numbers
            # change with the sizes) are estimated again only when the parts fit what they cost last.
            notes = self._notes_cost(self._notes(*sizes))
            n = sizes[part]
            while n > floor:
                n -= 1
                trial = [*sizes]
                trial[part] = n
                if self._within(trial, notes) <= budget:
                    notes = self._notes_cost(self._notes(*trial))
                    if self._within(trial, notes) <= budget:
                        break
            sizes[part] = n
        return sizes

    def fit(self, budget: int) -> Fitted:
        """The summary within `budget` tokens, at the loosest frame that holds it; when even the tightest
        does not, that frame with every part cut (its `tokens` above `budget`: what the run needs)."""
        for level in range(len(self.frames)):
            self._use_frame(level)
            sizes = self.sizes(budget)
            if self.cost(sizes) <= budget:
                break
        n_steps, n_notable, n_artifacts = sizes
        start = self._window_start(n_steps)
        kept = sorted(self.notable_order[:n_notable])
        view = self.base.model_copy(
            update={
                "steps": self.steps[start : start + n_steps],
                "notable": [self.notable[i] for i in kept],
                "artifacts": self.artifacts[:n_artifacts],
                "omitted": self._notes(*sizes),
            }
        )
        return Fitted(view, trace_text(view), self.cost(sizes))


def build_trace_view(
    detail: TraceDetail, failing: Sequence[Event], failing_total: int, budget: int
) -> tuple[TraceView, str]:
    """`get_trace`'s summary of a run, fitted to `budget` tokens."""
    fitted = TraceSummary(detail, failing, failing_total).fit(budget)
    return fitted.view, fitted.text
