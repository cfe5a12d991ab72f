"""A tiny recorder of trace events for the labelled corpus: steps, page actions, requests,
assertions, errors, model calls and tool calls, with seq and ts counted for you."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from molar_mcp.models.traces import Event

ORIGIN = "https://shop.example.test"
START_MS = 1_780_000_000_000
MODEL = "claude-sonnet-4-5"


@dataclass(frozen=True)
class Case:
    """One labelled trace: the top finding's label and critical step it must get."""

    name: str
    status: str | None
    events: tuple[Event, ...]
    label: str | None  # None: a clean trace, no findings expected
    step: int | None


@dataclass
class Run:
    """Records one run. `number_steps` also fills `Event.step` (as the store would)."""

    number_steps: bool = False
    events: list[Event] = field(default_factory=list)
    _step_id: str | None = None
    _steps: int = 0
    _requests: int = 0
    _calls: int = 0

    def emit(self, kind: str, *, ok: bool | None = None, line: str | None = None, **payload: Any) -> Event:
        return self._emit(kind, ok=ok, message=line, step_id=self._step_id, payload=payload)

    def _emit(
        self, kind: str, *, ok: bool | None, message: str | None, step_id: str | None, payload: dict[str, Any]
    ) -> Event:
        seq = len(self.events)
        number = self._steps if self.number_steps and step_id is not None else None
        event = Event(
            seq=seq,
            ts=START_MS + 37 * seq,
            kind=kind,
            step_id=step_id,
            step=number,
            ok=ok,
            message=message,
            payload={k: v for k, v in payload.items() if v is not None},
        )
        self.events.append(event)
        return event

    def case(self, name: str, label: str | None, step: int | None, status: str | None = "failed") -> Case:
        return Case(name, status, tuple(self.events), label, step)

    # -- steps ----------------------------------------------------------------------------------

    @contextmanager
    def step(self, title: str, *, ok: bool | None = True, step_id: str | None = None) -> Iterator[None]:
        """step.start … step.end; a repeated `step_id` re-enters a step (a retried test)."""
        self._steps += 1
        self._step_id = step_id or f"step-{self._steps}"
        self.emit("step.start", line=title, title=title)
        yield
        self.emit("step.end", ok=ok, line=f"{title}: {'passed' if ok else 'failed'}", duration_ms=120)
        self._step_id = None

    def restart(self) -> None:
        """Step numbering starts over (a whole-test retry re-runs the same step ids)."""
        self._steps = 0

    # -- browser --------------------------------------------------------------------------------

    def goto(self, path: str, status: int = 200) -> None:
        self.emit("action", line=f"page.goto('{path}')", action="goto", url=ORIGIN + path)
        self.fetch("GET", path, status, resource_type="document")
        self.emit("navigation", line=f"navigated to {ORIGIN + path}", url=ORIGIN + path, status=status)

    def fetch(
        self,
        method: str,
        path: str,
        status: int | None = 200,
        *,
        error: str | None = None,
        resource_type: str = "fetch",
        outside_step: bool = False,
        body: Any = None,
    ) -> None:
        """A request and its response; `status=None` leaves it unanswered, `error` fails it.
        A browser logs a console error for a status ≥ 400, as Chromium does."""
        self._requests += 1
        rid = f"req-{self._requests}"
        url = path if "://" in path else ORIGIN + path
        step_id = None if outside_step else self._step_id
        common = {"request_id": rid, "method": method, "url": url}
        self._emit(
            "network.request",
            ok=None,
            message=f"{method} {path}",
            step_id=step_id,
            payload={**common, "resource_type": resource_type},
        )
        if status is None:
            return
        reply = {**common, "status": 0 if error else status, "duration_ms": 84, "error": error, "body": body}
        self._emit(
            "network.response",
            ok=None,
            message=f"{method} {path} → {reply['status']}",
            step_id=step_id,
            payload={k: v for k, v in reply.items() if v is not None},
        )
        if status >= 400 and not error:
            self.console("error", f"Failed to load resource: the server responded with a status of {status} ()")

    def click(self, selector: str, *, ok: bool | None = None, message: str | None = None) -> None:
        self.emit("action", ok=ok, line=message or f"click {selector}", action="click", selector=selector)

    def fill(self, selector: str, value: str, *, ok: bool | None = None, message: str | None = None) -> None:
        self.emit("action", ok=ok, line=message or f"fill {selector}", action="fill", selector=selector, value=value)

    def expect(
        self,
        matcher: str,
        expected: Any,
        actual: Any,
        selector: str | None = None,
        message: str | None = None,
    ) -> None:
        ok = expected == actual
        text = message or (f"expect {selector or 'page'} {matcher}" if ok else f"expected {expected}; got {actual}")
        self.emit(
            "assertion",
            ok=ok,
            line=text,
            expected=expected,
            actual=actual,
            selector=selector,
            matcher=matcher,
        )

    def error(self, name: str, message: str, *, source: str | None = None) -> None:
        first = message.splitlines()[0]
        self.emit("error", ok=False, line=f"{name}: {first}", name=name, message=message, source=source)

    def console(self, level: str, text: str) -> None:
        self.emit("console", line=text, level=level, text=text)

    def log(self, text: str, level: str = "info") -> None:
        self.emit("log", line=text, level=level, text=text)

    def retry(self, attempt: int, reason: str, *, whole_test: bool = False) -> None:
        step_id = None if whole_test else self._step_id
        self._emit(
            "retry",
            ok=None,
            message=f"retry #{attempt}: {reason}",
            step_id=step_id,
            payload={"attempt": attempt, "reason": reason},
        )

    # -- agent ----------------------------------------------------------------------------------

    def llm(self, *, error: dict[str, Any] | None = None, text: str | None = None) -> None:
        self.emit("llm.request", line=f"{MODEL}: request", model=MODEL)
        message = f"{MODEL}: {error['status']} {error['type']}" if error else f"{MODEL}: end_turn"
        usage = None if error else {"input_tokens": 1800, "output_tokens": 220}
        self.emit("llm.response", ok=error is None, line=message, model=MODEL, usage=usage, error=error, text=text)

    def tool(
        self, name: str, arguments: dict[str, Any], *, error: dict[str, Any] | None = None, result: Any = "ok"
    ) -> None:
        self._calls += 1
        call_id = f"toolu_{self._calls:04d}"
        self.emit("tool.call", line=f"{name}({arguments})", tool=name, call_id=call_id, arguments=arguments)
        message = f"{name} → {error['type']}: {error['message']}" if error else f"{name} → ok"
        self.emit(
            "tool.result",
            ok=error is None,
            line=message,
            tool=name,
            call_id=call_id,
            result=None if error else result,
            error=error,
        )

    def turn(
        self,
        title: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        error: dict[str, Any] | None = None,
        ok: bool | None = True,
    ) -> None:
        """One agent step: the model asks for a tool, the tool answers."""
        with self.step(title, ok=ok):
            self.llm()
            self.tool(tool, arguments, error=error)
