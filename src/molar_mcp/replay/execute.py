"""One replay against a fresh app: restore the state before `from_step`, run the rest, return the child
trace's events (docs/replay.md).

The app starts empty, so the server-side state the earlier steps created (a cart, an account…) does
not exist. The replay re-runs steps 1…N-1 of the (edited) scenario first, recording them with
`payload.restored = true`, then runs N… with the variables those steps captured. The variables the
recorded trace had before N (`variables_before`) are compared with the fresh ones; a difference is
logged, and the fresh values win, because they name objects that exist in this app.

The child trace keeps the parent's step numbering: its steps 1…N-1 are the restoring steps, N… the
replayed ones, so "step 6" means the same step in both traces and the diff aligns them one to one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from molar_mcp.models import Event
from molar_mcp.replay.runner import Clock, RunStatus, epoch_ms, run_scenario
from molar_mcp.replay.scenario import Scenario

PhaseCallback = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class ReplayPlan:
    parent_id: str
    parent_short_id: str
    from_step: int
    scenario: Scenario
    recorded_variables: Mapping[str, str] = field(default_factory=dict)
    source_diff_paths: Sequence[str] = ()
    scenario_edited: bool = False


@dataclass
class ReplayRun:
    status: RunStatus
    events: list[Event]
    failure_signature: str | None
    failed_step: int | None
    duration_ms: int
    message: str = ""
    mismatches: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


async def _no_phase(phase: str, message: str) -> None:
    return None


async def run_replay(
    plan: ReplayPlan,
    client: httpx2.AsyncClient,
    *,
    on_phase: PhaseCallback = _no_phase,
    clock: Clock = epoch_ms,
) -> ReplayRun:
    """Run `plan` against the app behind `client` and return the child trace's events and outcome."""
    started = clock()
    n = plan.from_step
    out: list[Event] = []

    def add(events: Sequence[Event], *, restored: bool = False, rename_start: bool = False) -> None:
        for ev in events:
            payload: dict[str, Any] = dict(ev.payload)
            if restored:
                payload["restored"] = True
            if rename_start and ev.kind == "log" and ev.step_id is None and "restored_variables" in payload:
                # The restoring steps' captures are in this trace: `variables_before` rebuilds state from
                # them, so this run's starting variables must not reset it (docs/replay.md).
                payload["variables"] = payload.pop("restored_variables")
            out.append(ev.model_copy(update={"seq": len(out), "payload": payload}))

    edits = []
    if plan.scenario_edited:
        edits.append("the scenario edited")
    if plan.source_diff_paths:
        edits.append("source diffs of " + ", ".join(plan.source_diff_paths))
    intro = f"replay of {plan.parent_short_id} from step {n}" + (f" with {' and '.join(edits)}" if edits else "")
    add([_log(clock(), intro, replay_of=plan.parent_id, from_step=n, source_diffs=list(plan.source_diff_paths))])

    variables: dict[str, str] = {}
    mismatches: dict[str, tuple[str | None, str | None]] = {}
    if n > 1:
        await on_phase("restoring", f"re-running steps 1–{n - 1} to restore the app's state")
        setup_scenario = plan.scenario.model_copy(update={"steps": plan.scenario.steps[: n - 1]})
        setup = await run_scenario(setup_scenario, client, clock=clock)
        add(setup.events[:-1], restored=True)  # its closing "run passed" line would read as the replay's outcome
        if setup.status != "passed":
            text = (
                f"step {setup.failed_step} failed while restoring the state before step {n}: "
                f"{setup.failure_signature}; the replay stopped there"
            )
            add([_log(clock(), text, level="error")])
            return ReplayRun(
                status=setup.status,
                events=out,
                failure_signature=setup.failure_signature,
                failed_step=setup.failed_step,
                duration_ms=max(0, clock() - started),
                message=text,
            )
        variables = dict(setup.variables)
        for name in sorted(set(plan.recorded_variables) | set(variables)):
            recorded, fresh = plan.recorded_variables.get(name), variables.get(name)
            if recorded != fresh:
                mismatches[name] = (recorded, fresh)
        text = f"state before step {n} restored: {len(variables)} variables"
        if mismatches:
            text += "; differ from the recorded run (the fresh values are used): " + ", ".join(
                f"{k} {a!r} → {b!r}" for k, (a, b) in mismatches.items()
            )
        add(
            [
                _log(
                    clock(),
                    text,
                    level="warning" if mismatches else "info",
                    variables=variables,
                    recorded_variables=dict(plan.recorded_variables),
                )
            ]
        )
    await on_phase("running", f"running steps {n}–{len(plan.scenario.steps)}")
    main = await run_scenario(plan.scenario, client, from_step=n, variables=variables, clock=clock)
    add(main.events, rename_start=n > 1)
    outcome = f"the replay {main.status}" + (f" at {main.failure_signature}" if main.failure_signature else "")
    return ReplayRun(
        status=main.status,
        events=out,
        failure_signature=main.failure_signature,
        failed_step=main.failed_step,
        duration_ms=max(0, clock() - started),
        message=outcome,
        mismatches=mismatches,
    )


def _log(ts: int, text: str, *, level: str = "info", **extra: Any) -> Event:
    return Event(seq=0, ts=ts, kind="log", message=text, payload={"level": level, "text": text, **extra})
