"""Labelled agent traces: coding and support agents calling models and tools."""

from __future__ import annotations

from .builder import Case, Run

RATE_LIMIT = {"status": 429, "type": "rate_limit_error", "message": "Number of request tokens exceeded"}
OVERLOADED = {"status": 529, "type": "overloaded_error", "message": "Overloaded"}


def _warm_up(run: Run) -> None:
    run.turn("Read the issue", "read_file", {"path": "ISSUE.md"})
    run.turn("List the sources", "list_dir", {"path": "src/shop"})


def rate_limited_mid_run() -> Case:
    run = Run()
    _warm_up(run)
    run.turn("Read the cart module", "read_file", {"path": "src/shop/cart.py"})
    with run.step("Plan the fix", ok=False):
        run.llm(error=RATE_LIMIT)
        run.error("RateLimitError", "Error code: 429 - request tokens exceeded")
    return run.case("an-agent-stopped-by-a-429-is-rate-limited", "rate_limited", 4)


def model_overloaded() -> Case:
    run = Run()
    run.turn("Read the issue", "read_file", {"path": "ISSUE.md"})
    with run.step("Plan the fix", ok=False):
        run.llm(error=OVERLOADED)
    return run.case("an-agent-whose-model-call-fails-for-good-is-an-llm-error", "llm_error", 2, "error")


def run_tests_fails() -> Case:
    run = Run()
    _warm_up(run)
    run.turn(
        "Run the tests",
        "run_tests",
        {"path": "tests/test_cart.py"},
        error={"type": "ExitCode", "message": "pytest exited with code 1: 3 failed"},
    )
    with run.step("Report"):
        run.llm(text="I could not make the cart tests pass.")
    return run.case("an-agent-whose-test-run-tool-fails-is-a-tool-error", "tool_error", 3)


def recovered_then_unrecovered_tool_error() -> Case:
    run = Run()
    run.turn("Read the issue", "read_file", {"path": "ISSUE.md"})
    run.turn(
        "Fetch the docs",
        "web_fetch",
        {"url": "https://docs.example.test/coupons"},
        error={"type": "Timeout", "message": "fetch timed out after 20 s"},
    )
    run.turn("Fetch the docs again", "web_fetch", {"url": "https://docs.example.test/coupons#stacking"})
    run.turn("Read the coupon module", "read_file", {"path": "src/shop/coupons.py"})
    run.turn(
        "Apply the patch",
        "apply_patch",
        {"patch": "--- a/src/shop/coupons.py"},
        error={"type": "PatchError", "message": "hunk 2 does not apply"},
    )
    return run.case("the-tool-error-the-agent-never-recovered-from-is-the-cause", "tool_error", 5)


def repeats_same_search() -> Case:
    run = Run()
    _warm_up(run)
    for n in range(4):
        run.turn(f"Search the docs ({n + 1})", "search_docs", {"query": "refund policy", "limit": 5})
    with run.step("Give up"):
        run.log("Agent stopped: reached max_steps=7 without a final answer", level="warning")
    return run.case("an-agent-repeating-one-search-is-a-loop-not-just-max-steps", "loop", 3)


def alternates_two_calls() -> Case:
    run = Run()
    run.turn("Read the ticket", "read_ticket", {"id": "T-77"})
    for n in range(5):
        if n % 2 == 0:
            run.turn(f"Look up the order ({n})", "get_order", {"order_id": "ord_123"})
        else:
            run.turn(f"Look up the customer ({n})", "get_customer", {"customer_id": "cus_9"})
    return run.case("an-agent-alternating-between-the-same-calls-is-a-loop", "loop", 2)


def retries_failing_read() -> Case:
    run = Run()
    run.turn("Read the issue", "read_file", {"path": "ISSUE.md"})
    missing = {"type": "FileNotFoundError", "message": "ENOENT: no such file config/settings.yaml"}
    for n in range(3):
        run.turn(f"Read the settings ({n + 1})", "read_file", {"path": "config/settings.yaml"}, error=missing)
    with run.step("Give up", ok=False):
        run.error("AgentError", "giving up after repeated tool failures")
    return run.case("an-agent-retrying-a-failing-read-is-a-loop", "loop", 2)


def max_steps_message() -> Case:
    run = Run()
    for n in range(11):
        run.turn(f"Explore ({n + 1})", "read_file", {"path": f"src/shop/module_{n}.py"})
    with run.step("Stop"):
        run.log("Stopping: reached max_steps=12 without a final answer", level="warning")
    return run.case("an-agent-that-says-it-hit-max-steps-is-max-steps", "max_steps", 12)


def many_steps_no_answer() -> Case:
    run = Run()
    for n in range(22):
        run.turn(f"Explore ({n + 1})", "grep", {"pattern": f"TODO-{n}"})
    return run.case("an-agent-that-runs-22-steps-and-stops-silently-ran-out-of-steps", "max_steps", 22, "aborted")


def passes_after_recovered_tool_error() -> Case:
    run = Run()
    run.turn("Read the issue", "read_file", {"path": "ISSUE.md"})
    run.turn(
        "Run the tests",
        "run_tests",
        {"path": "tests"},
        error={"type": "ExitCode", "message": "1 failed"},
        ok=False,
    )
    run.turn("Fix the bug", "apply_patch", {"patch": "--- a/src/shop/cart.py"})
    run.turn("Run the tests again", "run_tests", {"path": "tests"})
    return run.case("an-agent-that-passes-after-a-recovered-tool-error-has-no-findings", None, None, "passed")


def passes_after_recovered_rate_limit() -> Case:
    run = Run()
    with run.step("Plan"):
        run.llm(error=RATE_LIMIT)
        run.llm(text="Plan: read the cart module, then patch it.")
    run.turn("Read the cart module", "read_file", {"path": "src/shop/cart.py"})
    return run.case("an-agent-that-passes-after-a-retried-429-has-no-findings", None, None, "passed")


def rate_limit_then_tool_error() -> Case:
    run = Run()
    with run.step("Plan"):
        run.llm(error=RATE_LIMIT)
        run.llm(text="Plan: patch the coupon module.")
    _warm_up(run)
    run.turn(
        "Write the fix",
        "write_file",
        {"path": "/etc/shop.conf"},
        error={"type": "PermissionError", "message": "permission denied: /etc/shop.conf"},
    )
    return run.case("a-recovered-429-is-not-blamed-for-a-later-tool-error", "tool_error", 4)


def run_budget_timeout() -> Case:
    run = Run()
    _warm_up(run)
    for n in range(3):
        run.turn(f"Profile ({n + 1})", "run_benchmark", {"suite": f"cart-{n}"})
    with run.step("Profile (4)", ok=False):
        run.llm()
        run.error("TimeoutError", "agent run exceeded its 600 s budget")
    return run.case("an-agent-run-that-exceeds-its-time-budget-is-a-timeout", "timeout", 6, "error")


AGENT_CASES: tuple[Case, ...] = tuple(
    build()
    for build in (
        rate_limited_mid_run,
        model_overloaded,
        run_tests_fails,
        recovered_then_unrecovered_tool_error,
        repeats_same_search,
        alternates_two_calls,
        retries_failing_read,
        max_steps_message,
        many_steps_no_answer,
        passes_after_recovered_tool_error,
        passes_after_recovered_rate_limit,
        rate_limit_then_tool_error,
        run_budget_timeout,
    )
)
