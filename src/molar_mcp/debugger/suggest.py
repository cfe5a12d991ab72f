"""The replay a debugger suggests: start at the top finding's critical step, after changing what its
label says broke. A pure function of the findings (same findings in → same suggestion out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from molar_mcp.debugger.findings import Finding, rank_key
from molar_mcp.models import SuggestedReplay

# What to change, per label; "{n}" is the critical step. Each ends with where to replay from.
_CHANGES: Final[dict[str, str]] = {
    "http_error": "fix the failing request at step {n}, then replay from step {n}",
    "assertion_failed": (
        "fix what step {n} checks (the app's behaviour, or the assertion if its expectation is wrong), "
        "then replay from step {n}"
    ),
    "network_failure": "make the request at step {n} reach a service that answers, then replay from step {n}",
    "timeout": "make what step {n} waits for happen (or wait for the right thing), then replay from step {n}",
    "selector_not_found": "fix the selector at step {n} (or the page it targets), then replay from step {n}",
    "js_exception": "fix the page's JavaScript exception at step {n}, then replay from step {n}",
    "console_error": "fix the console error at step {n}, then replay from step {n}",
    "navigation_error": "fix the navigation target at step {n}, then replay from step {n}",
    "flaky": "make step {n} wait for its condition instead of passing on retry, then replay from step {n}",
    "llm_error": "handle the model error at step {n} (retry or fall back), then replay from step {n}",
    "rate_limited": "back off before the model call at step {n} (or raise the limit), then replay from step {n}",
    "tool_error": "fix the failing tool call at step {n} (its arguments or the tool), then replay from step {n}",
    "loop": "stop the repeated tool call at step {n} (a guard or a prompt change), then replay from step {n}",
    "max_steps": "find why the agent had not finished by step {n} (or raise its step limit), then replay from step {n}",
    "step_failed": "read step {n}'s events, fix what they show, then replay from step {n}",
}
_DEFAULT: Final = "fix what failed at step {n}, then replay from step {n}"


def suggest_replay(findings: Sequence[Finding]) -> SuggestedReplay | None:
    """From the best finding: `from_step` its critical step, `reason` what to change first.

    None when there are no findings or the best one has no critical step (nothing to replay from).
    """
    if not findings:
        return None
    top = min(findings, key=rank_key)
    if top.critical_step is None:
        return None
    template = _CHANGES.get(top.label, _DEFAULT)
    return SuggestedReplay(from_step=top.critical_step, reason=template.format(n=top.critical_step))
