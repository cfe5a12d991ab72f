"""A scenario replay's own program, run inside the sandbox: `python -m molar_mcp.replay.inside PLAN RESULT`.

The server writes the plan (the app config, the source diffs, the edited scenario, `from_step`, the
recorded variables); this program copies the app's source to the sandbox's /tmp, applies the diffs,
starts the app on the sandbox's own loopback, runs the replay against it (`run_replay`), stops the app
and writes the outcome as JSON to RESULT. Phases go to stdout as `molar-phase <phase> <message>` lines.
The server treats RESULT as untrusted (the patched app runs as the same uid): it validates it and caps
its size.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from molar_mcp.models import Event
from molar_mcp.replay.apps import AppConfig, AppStartError, DiffDoesNotApply
from molar_mcp.replay.edits import SCENARIO_FILE
from molar_mcp.replay.execute import ReplayPlan, run_replay
from molar_mcp.replay.recording import launch_app
from molar_mcp.replay.runner import RunStatus
from molar_mcp.replay.scenario import parse_scenario

PHASE_PREFIX = "molar-phase "


class InsidePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app: AppConfig
    source_diffs: list[tuple[str, str]] = Field(default_factory=list)
    scenario_text: str
    parent_id: str
    parent_short_id: str
    from_step: int
    recorded_variables: dict[str, str] = Field(default_factory=dict)
    scenario_edited: bool = False


class InsideResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: Literal["diff_does_not_apply", "app_start_failed"] | None = None
    message: str = ""
    log_tail: str | None = None
    status: RunStatus | None = None
    events: list[Event] = Field(default_factory=list)
    failure_signature: str | None = None
    failed_step: int | None = None
    duration_ms: int = 0


async def replay_inside(plan: InsidePlan) -> InsideResult:
    scenario = parse_scenario(plan.scenario_text, source=SCENARIO_FILE)
    replay_plan = ReplayPlan(
        parent_id=plan.parent_id,
        parent_short_id=plan.parent_short_id,
        from_step=plan.from_step,
        scenario=scenario,
        recorded_variables=plan.recorded_variables,
        source_diff_paths=[path for path, _ in plan.source_diffs],
        scenario_edited=plan.scenario_edited,
    )

    async def on_phase(phase: str, message: str) -> None:
        print(f"{PHASE_PREFIX}{phase} {message}", flush=True)

    try:
        async with launch_app(plan.app, plan.source_diffs, workdir=Path("/tmp")) as client:  # noqa: S108 - the sandbox's own
            run = await run_replay(replay_plan, client, on_phase=on_phase)
    except DiffDoesNotApply as exc:
        return InsideResult(error="diff_does_not_apply", message=str(exc))
    except AppStartError as exc:
        message = str(exc).split("\n--- app log", 1)[0]
        return InsideResult(error="app_start_failed", message=message, log_tail=exc.log_tail or None)
    return InsideResult(
        status=run.status,
        events=run.events,
        failure_signature=run.failure_signature,
        failed_step=run.failed_step,
        duration_ms=run.duration_ms,
        message=run.message,
    )


def main(argv: list[str]) -> int:
    plan_path, result_path = Path(argv[0]), Path(argv[1])
    plan = InsidePlan.model_validate_json(plan_path.read_bytes())
    result = anyio.run(replay_inside, plan)
    result_path.write_text(result.model_dump_json(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
