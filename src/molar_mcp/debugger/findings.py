"""What a detector reports: one `Finding` per suspected cause of a failure. No I/O here."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

# Every label a detector may emit, in the order the docs list them.
LABELS: tuple[str, ...] = (
    "assertion_failed",
    "http_error",
    "network_failure",
    "timeout",
    "selector_not_found",
    "js_exception",
    "console_error",
    "navigation_error",
    "flaky",
    "llm_error",
    "rate_limited",
    "tool_error",
    "loop",
    "max_steps",
    "step_failed",
)

# The short word a signature starts with, per label ("step-7: assertion .subscription-status").
SIGNATURE_WORDS: dict[str, str] = {
    "assertion_failed": "assertion",
    "http_error": "http",
    "network_failure": "network",
    "timeout": "timeout",
    "selector_not_found": "selector",
    "js_exception": "js",
    "console_error": "console",
    "navigation_error": "navigation",
    "flaky": "flaky",
    "llm_error": "llm",
    "rate_limited": "rate-limit",
    "tool_error": "tool",
    "loop": "loop",
    "max_steps": "max-steps",
    "step_failed": "step-failed",
}

SIGNATURE_MAX_CHARS = 120


class Finding(BaseModel):
    """One suspected cause of a trace's failure, as a deterministic detector judged it.

    `critical_step` / `critical_seq` point at the earliest event that explains the failure (for
    a 404 at step 5 that makes step 7's assertion fail, that is step 5). `signature` is short
    and stable across runs of the same failure (no request ids, no timings), so failures can be
    grouped by it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(description="what kind of failure, one of LABELS")
    confidence: float = Field(ge=0.0, le=1.0, description="fixed by the strength of the evidence")
    critical_step: int | None = Field(default=None, ge=1, description="1-based step of the cause")
    critical_seq: int | None = Field(default=None, ge=0, description="seq of the causing event")
    evidence_seqs: list[int] = Field(default_factory=list, description="sorted seqs of the evidence")
    summary: str = Field(description="one plain sentence")
    signature: str = Field(description="short failure signature, e.g. 'step-5: http 404 GET /api/x'")


def make_signature(label: str, step: int | None, subject: str = "") -> str:
    """`step-<n>: <word> <subject>` (no step prefix when the step is unknown), one line, capped."""
    word = SIGNATURE_WORDS.get(label, label.replace("_", "-"))
    text = " ".join(f"{word} {subject}".split())
    if step is not None:
        text = f"step-{step}: {text}"
    if len(text) > SIGNATURE_MAX_CHARS:
        text = text[: SIGNATURE_MAX_CHARS - 1].rstrip() + "…"
    return text


def make_finding(
    label: str,
    confidence: float,
    *,
    step: int | None,
    seq: int | None,
    evidence: Iterable[int | None],
    summary: str,
    subject: str = "",
) -> Finding:
    """Build a finding; the evidence is deduplicated and sorted, the signature derived."""
    seqs = sorted({s for s in [seq, *evidence] if s is not None})
    return Finding(
        label=label,
        confidence=round(confidence, 4),
        critical_step=step,
        critical_seq=seq,
        evidence_seqs=seqs,
        summary=" ".join(summary.split()),
        signature=make_signature(label, step, subject),
    )


def rank_key(finding: Finding) -> tuple[float, int, str, str]:
    """Best first: highest confidence, then earliest critical seq, then label and signature."""
    seq = finding.critical_seq if finding.critical_seq is not None else 2**62
    return (-finding.confidence, seq, finding.label, finding.signature)
