"""The labelled corpus of small traces, and the accuracy of an analyzer over it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from molar_mcp.debugger.detectors import Finding
from molar_mcp.models.traces import Event

from .agent import AGENT_CASES
from .builder import Case
from .web import WEB_CASES

CASES: tuple[Case, ...] = WEB_CASES + AGENT_CASES

Analyzer = Callable[[Sequence[Event], str | None], list[Finding]]


@dataclass(frozen=True)
class Outcome:
    case: Case
    label: str | None
    step: int | None

    @property
    def correct(self) -> bool:
        return (self.label, self.step) == (self.case.label, self.case.step)


def outcome(case: Case, analyze: Analyzer) -> Outcome:
    """What the analyzer's top finding says about one case (label None: no findings)."""
    findings = analyze(case.events, case.status)
    top = findings[0] if findings else None
    return Outcome(case, top.label if top else None, top.critical_step if top else None)


def accuracy(analyze: Analyzer, cases: Sequence[Case] = CASES) -> tuple[float, str]:
    """The share of cases whose top label and critical step are right, and a table per label."""
    outcomes = [outcome(case, analyze) for case in cases]
    per_label: dict[str, list[Outcome]] = {}
    for o in outcomes:
        per_label.setdefault(o.case.label or "(no findings)", []).append(o)
    lines = [f"{'expected label':<22} {'cases':>5} {'right':>5}"]
    for label in sorted(per_label):
        rows = per_label[label]
        lines.append(f"{label:<22} {len(rows):>5} {sum(o.correct for o in rows):>5}")
    right = sum(o.correct for o in outcomes)
    lines.append(f"{'total':<22} {len(outcomes):>5} {right:>5}  ({right / len(outcomes):.1%})")
    lines.extend(
        f"MISS {o.case.name}: want {o.case.label}@{o.case.step}, got {o.label}@{o.step}"
        for o in outcomes
        if not o.correct
    )
    return right / len(outcomes), "\n".join(lines)
