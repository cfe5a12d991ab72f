"""The step tree of a trace, derived from its events (pure; shared by bundle ingest and live append).

Rules (docs/bundle-format.md, "Steps"):
- an event's `step_id` names its innermost step; a step begins where its id first appears;
- a `step.start` whose payload names a known `parent_step_id` opens a child of that step; any other
  new step is a top-level step. A parent named before it began is not known yet: the step is then a
  top-level step (producers send a parent's `step.start` before its children's);
- top-level steps are numbered 1, 2, … in order; a child's path is its parent's path plus its own
  position among its siblings ("3.2"); every event's `step` is its top-level ancestor's number;
- a step's seqs, counts and times cover its subtree; its `ok` is what its own `step.end` says, else
  false once a failed assertion, error or failed child step happened inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Kinds whose failure fails the steps around them (a failed HTTP response alone does not: apps
# tolerate many, and the detectors decide which one mattered).
_FAILING_KINDS = frozenset({"assertion", "error"})
# Step rows as the stores keep them (the column order of `StepNode.row`).
STEP_COLUMNS = (
    "step_id, ord, step, path, parent_step_id, depth, category, title, ok, "
    "first_seq, last_seq, event_count, start_ts, end_ts"
)


@dataclass(slots=True)
class StepNode:
    step_id: str
    ord: int
    step: int
    path: str
    parent_step_id: str | None
    depth: int
    category: str | None = None
    title: str | None = None
    ok: bool | None = None
    first_seq: int = 0
    last_seq: int = 0
    event_count: int = 0
    start_ts: int | None = None
    end_ts: int | None = None
    children: int = 0
    parent: StepNode | None = field(default=None, repr=False)

    def row(self) -> tuple[Any, ...]:
        return (
            self.step_id,
            self.ord,
            self.step,
            self.path,
            self.parent_step_id,
            self.depth,
            self.category,
            self.title,
            None if self.ok is None else int(self.ok),
            self.first_seq,
            self.last_seq,
            self.event_count,
            self.start_ts,
            self.end_ts,
        )

    @property
    def duration_ms(self) -> int | None:
        if self.start_ts is None or self.end_ts is None:
            return None
        return max(0, self.end_ts - self.start_ts)


class StepTree:
    """The steps of one trace, grown event by event. Load a stored trace's rows to continue it.

    A tree may hold part of a stored trace's steps (`load_steps_for`: the ones a batch of events names,
    with their ancestors); it then needs what the rest would have told it: `top` (the highest step
    number), `count` (the next step's `ord`) and `children` (how many children the steps a batch may
    add children to already have)."""

    def __init__(
        self,
        rows: Iterable[tuple[Any, ...]] = (),
        *,
        top: int | None = None,
        count: int | None = None,
        children: Mapping[str, int] | None = None,
    ) -> None:
        self.nodes: dict[str, StepNode] = {}
        self.top = 0
        self.touched: dict[str, StepNode] = {}
        for r in sorted(rows, key=lambda r: r[1]):
            node = StepNode(
                step_id=r[0],
                ord=r[1],
                step=r[2],
                path=r[3],
                parent_step_id=r[4],
                depth=r[5],
                category=r[6],
                title=r[7],
                ok=None if r[8] is None else bool(r[8]),
                first_seq=r[9],
                last_seq=r[10],
                event_count=r[11],
                start_ts=r[12],
                end_ts=r[13],
            )
            node.parent = self.nodes.get(node.parent_step_id) if node.parent_step_id else None
            if node.parent is not None:
                node.parent.children += 1
            else:
                self.top = max(self.top, node.step)
            self.nodes[node.step_id] = node
        self.count = len(self.nodes) if count is None else count  # the next step's ord
        if top is not None:
            self.top = top
        for step_id, known in (children or {}).items():
            if step_id in self.nodes:
                self.nodes[step_id].children = known

    def number(self, step_id: str | None, kind: str, payload: Mapping[str, Any]) -> StepNode | None:
        """The step an event belongs to, created when its id is new."""
        if step_id is None:
            return None
        node = self.nodes.get(step_id)
        if node is not None:
            return node
        parent_id = payload.get("parent_step_id") if kind == "step.start" else None
        parent = self.nodes.get(parent_id) if isinstance(parent_id, str) and parent_id != step_id else None
        category = payload.get("category") if kind == "step.start" else None
        category = category[:64] if isinstance(category, str) else None
        if parent is None:
            self.top += 1
            node = StepNode(step_id, self.count, self.top, str(self.top), None, 0, category)
        else:
            parent.children += 1
            node = StepNode(
                step_id,
                self.count,
                parent.step,
                f"{parent.path}.{parent.children}",
                parent.step_id,
                parent.depth + 1,
                category,
            )
            node.parent = parent
        self.nodes[step_id] = node
        self.count += 1
        return node

    def observe(
        self,
        node: StepNode,
        *,
        seq: int,
        ts: int,
        kind: str,
        ok: bool | None,
        message: str | None,
        payload: Mapping[str, Any],
    ) -> None:
        """Fold one event of `node` into it and its ancestors."""
        if kind == "step.start" and node.title is None:
            title = message or payload.get("title")
            node.title = title if isinstance(title, str) else None
        if kind == "step.end" and ok is not None:
            node.ok = ok
        # A failure inside a step fails the steps around it, until a step's own end says otherwise
        # (a retried action that then passed: its parent ends ok, and the failure stays recovered).
        fails = ok is False and (kind in _FAILING_KINDS or kind == "step.end")
        current: StepNode | None = node
        while current is not None:
            if current.event_count == 0:
                current.first_seq = seq
                current.start_ts = ts
            current.last_seq = max(current.last_seq, seq)
            current.event_count += 1
            current.end_ts = ts if current.end_ts is None else max(current.end_ts, ts)
            if fails:
                current.ok = False
            self.touched[current.step_id] = current
            current = current.parent

    def observe_run(
        self, node: StepNode, *, first_seq: int, first_ts: int, last_seq: int, end_ts: int, count: int
    ) -> None:
        """Fold `count` plain events of `node` (no `step.start`/`step.end`, none failed) into it and its
        ancestors at once: what `observe` of each would do. The run's first event is `first_seq` at
        `first_ts`; `last_seq` and `end_ts` are the highest of the run."""
        current: StepNode | None = node
        while current is not None:
            if current.event_count == 0:
                current.first_seq = first_seq
                current.start_ts = first_ts
            current.last_seq = max(current.last_seq, last_seq)
            current.event_count += count
            current.end_ts = end_ts if current.end_ts is None else max(current.end_ts, end_ts)
            self.touched[current.step_id] = current
            current = current.parent

    def take_touched(self) -> list[StepNode]:
        """The steps changed since the last call, in tree order (for an upsert)."""
        out = sorted(self.touched.values(), key=lambda n: n.ord)
        self.touched = {}
        return out

    def ordered(self) -> list[StepNode]:
        return sorted(self.nodes.values(), key=lambda n: n.ord)
