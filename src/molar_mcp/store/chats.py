"""Debugger chats in the embedded store (component "chats"): chats, their messages, the audit rows of the
tool calls a model made, and the usage ledger the monthly debugger budget is counted from.

Every query is scoped to one org: a chat of another org is "not found". The ledger has one row per model
call (unique per answer and turn), so a call is never charged twice; it outlives the chats (a deleted
trace takes its chats along, not the org's spend).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from molar_mcp.models.chats import (
    ChatDetail,
    ChatMessage,
    ChatRole,
    MessageKind,
    MessageStatus,
    ModelRequest,
    ToolCallRow,
    TurnMessage,
    Usage,
)
from molar_mcp.store.db import Database
from molar_mcp.store.port import StoreError
from molar_mcp.store.sqlite import find_trace_row

MIGRATIONS: tuple[str, ...] = (
    # 1: chats, messages, tool-call audit rows, and the per-org usage ledger.
    """
    CREATE TABLE chats (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        org_id TEXT NOT NULL,
        trace_pk INTEGER NOT NULL REFERENCES traces(pk) ON DELETE CASCADE,
        title TEXT,
        system TEXT NOT NULL,
        findings TEXT NOT NULL,
        pending TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX chats_org_trace ON chats(org_id, trace_pk, created_ms);
    CREATE TABLE chat_messages (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        chat_pk INTEGER NOT NULL REFERENCES chats(pk) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        kind TEXT NOT NULL,
        content TEXT NOT NULL,
        status TEXT NOT NULL,
        model TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX chat_messages_chat ON chat_messages(chat_pk, pk);
    CREATE TABLE chat_tool_calls (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        message_pk INTEGER NOT NULL REFERENCES chat_messages(pk) ON DELETE CASCADE,
        turn INTEGER NOT NULL,
        tool TEXT NOT NULL,
        arguments TEXT NOT NULL,
        result_chars INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        error TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX chat_tool_calls_message ON chat_tool_calls(message_pk, pk);
    CREATE TABLE debugger_usage (
        pk INTEGER PRIMARY KEY,
        org_id TEXT NOT NULL,
        month TEXT NOT NULL,
        message_id TEXT NOT NULL,
        turn INTEGER NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_millicents INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        UNIQUE (message_id, turn)
    );
    CREATE INDEX debugger_usage_org_month ON debugger_usage(org_id, month);
    """,
)


class ChatNotFound(StoreError):
    def __init__(self, chat_id: str) -> None:
        super().__init__(f"no chat {chat_id!r}")
        self.chat_id = chat_id


class NotAwaited(StoreError):
    """A model response for a turn the chat is not waiting for (`awaited`: the turn it is, or None)."""

    def __init__(self, awaited: int | None) -> None:
        super().__init__(f"awaiting turn {awaited}" if awaited is not None else "awaiting no model response")
        self.awaited = awaited


@dataclass(frozen=True)
class ChatState:
    """What the loop needs of a chat: its system prompt and the findings it was seeded with."""

    id: str
    system: str
    findings: str


def month_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def _ms(moment: datetime | None) -> int:
    return int((moment or datetime.now(UTC)).timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class SqliteChatStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("chats", MIGRATIONS)

    # ---- chats -----------------------------------------------------------------------------------

    def create_chat(
        self,
        org_id: str,
        trace_ref: str,
        *,
        title: str | None,
        system: str,
        findings: str,
        now: datetime | None = None,
    ) -> str:
        """A chat on the trace, seeded with the findings as its first (assistant) message; its id."""
        chat_id = str(uuid.uuid4())
        created = _ms(now)
        with self.db.tx() as conn:
            trace_pk = int(find_trace_row(conn, org_id, trace_ref)[0])
            cur = conn.execute(
                "INSERT INTO chats (id, org_id, trace_pk, title, system, findings, created_ms) VALUES (?,?,?,?,?,?,?)",
                (chat_id, org_id, trace_pk, title, system, findings, created),
            )
            conn.execute(
                "INSERT INTO chat_messages (id, chat_pk, role, kind, content, status, created_ms)"
                " VALUES (?,?,'assistant','findings',?,'done',?)",
                (str(uuid.uuid4()), cur.lastrowid, findings, created),
            )
        return chat_id

    def chat_state(self, org_id: str, chat_id: str) -> ChatState:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT id, system, findings FROM chats WHERE id = ? AND org_id = ?", (chat_id, org_id)
            ).fetchone()
        if row is None:
            raise ChatNotFound(chat_id)
        return ChatState(row[0], row[1], row[2])

    def get_chat(self, org_id: str, chat_id: str, *, model: str | None = None) -> ChatDetail:
        """The chat with every message and its tool calls, oldest first. `model` is the server's."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT c.pk, c.id, t.id, t.short_id, c.title, c.created_ms, c.pending FROM chats c"
                " JOIN traces t ON t.pk = c.trace_pk WHERE c.id = ? AND c.org_id = ?",
                (chat_id, org_id),
            ).fetchone()
            if row is None:
                raise ChatNotFound(chat_id)
            messages = conn.execute(
                "SELECT pk, id, role, kind, content, status, model, created_ms FROM chat_messages"
                " WHERE chat_pk = ? ORDER BY pk",
                (row[0],),
            ).fetchall()
            calls = _tool_calls(conn, [m[0] for m in messages])
            usage = _usage(conn, [m[1] for m in messages])
        return ChatDetail(
            id=row[1],
            trace_id=row[2],
            trace_short_id=row[3],
            title=row[4],
            created_at=_dt(row[5]),
            model=model,
            messages=[_message(m, calls.get(m[0], []), usage.get(m[1])) for m in messages],
            pending=ModelRequest.model_validate_json(row[6]) if row[6] else None,
        )

    def history(self, org_id: str, chat_id: str) -> list[TurnMessage]:
        """Earlier questions and finished answers, for a follow-up (the findings are in the system prompt;
        tool results of earlier answers are left out: the answers carry what mattered)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT m.role, m.content FROM chat_messages m JOIN chats c ON c.pk = m.chat_pk"
                " WHERE c.id = ? AND c.org_id = ? AND m.kind != 'findings' AND m.status = 'done' ORDER BY m.pk",
                (chat_id, org_id),
            ).fetchall()
        return [TurnMessage(role=role, content=content) for role, content in rows]

    def set_pending(self, org_id: str, chat_id: str, request: ModelRequest) -> None:
        """The completion the chat now awaits from the caller's model."""
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE chats SET pending = ? WHERE id = ? AND org_id = ?", (request.model_dump_json(), chat_id, org_id)
            )

    def take_pending(self, org_id: str, chat_id: str, turn: int) -> ModelRequest:
        """The completion the chat awaits for `turn`, cleared in the same transaction: a second answer to
        the same turn finds nothing to answer (`NotAwaited`), so its tool calls never run twice."""
        with self.db.tx() as conn:
            row = conn.execute("SELECT pending FROM chats WHERE id = ? AND org_id = ?", (chat_id, org_id)).fetchone()
            if row is None:
                raise ChatNotFound(chat_id)
            pending = ModelRequest.model_validate_json(row[0]) if row[0] else None
            if pending is None or pending.turn != turn:
                raise NotAwaited(pending.turn if pending is not None else None)
            conn.execute("UPDATE chats SET pending = NULL WHERE id = ? AND org_id = ?", (chat_id, org_id))
        return pending

    # ---- messages --------------------------------------------------------------------------------

    def add_message(
        self,
        org_id: str,
        chat_id: str,
        *,
        role: ChatRole,
        kind: MessageKind,
        content: str,
        status: MessageStatus = "done",
        model: str | None = None,
        now: datetime | None = None,
    ) -> ChatMessage:
        message_id = str(uuid.uuid4())
        created = _ms(now)
        with self.db.tx() as conn:
            chat = conn.execute("SELECT pk FROM chats WHERE id = ? AND org_id = ?", (chat_id, org_id)).fetchone()
            if chat is None:
                raise ChatNotFound(chat_id)
            if kind == "question":
                # A new question ends an answer still waiting for the caller's model: it will never come.
                conn.execute(
                    "UPDATE chat_messages SET status = 'error', content = ? WHERE chat_pk = ? AND status ="
                    " 'awaiting_model'",
                    ("Abandoned: a new question was asked before the model answered.", chat[0]),
                )
                conn.execute("UPDATE chats SET pending = NULL WHERE pk = ?", (chat[0],))
            conn.execute(
                "INSERT INTO chat_messages (id, chat_pk, role, kind, content, status, model, created_ms)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (message_id, chat[0], role, kind, content, status, model, created),
            )
        return ChatMessage(
            id=message_id, role=role, kind=kind, content=content, status=status, model=model, created_at=_dt(created)
        )

    def finish_message(
        self, org_id: str, message_id: str, *, content: str, status: MessageStatus, model: str | None = None
    ) -> ChatMessage:
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE chat_messages SET content = ?, status = ?, model = coalesce(?, model) WHERE id = ? AND"
                " chat_pk IN (SELECT pk FROM chats WHERE org_id = ?)",
                (content, status, model, message_id, org_id),
            )
        return self.get_message(org_id, message_id)

    def get_message(self, org_id: str, message_id: str) -> ChatMessage:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT m.pk, m.id, m.role, m.kind, m.content, m.status, m.model, m.created_ms FROM chat_messages m"
                " JOIN chats c ON c.pk = m.chat_pk WHERE m.id = ? AND c.org_id = ?",
                (message_id, org_id),
            ).fetchone()
            if row is None:
                raise ChatNotFound(message_id)
            calls = _tool_calls(conn, [row[0]])
            usage = _usage(conn, [row[1]])
        return _message(row, calls.get(row[0], []), usage.get(row[1]))

    # ---- audit and usage -------------------------------------------------------------------------

    def add_tool_call(
        self,
        org_id: str,
        message_id: str,
        *,
        turn: int,
        tool: str,
        arguments: dict[str, Any],
        result_chars: int,
        duration_ms: int,
        error: str | None,
        now: datetime | None = None,
    ) -> ToolCallRow:
        call_id = str(uuid.uuid4())
        created = _ms(now)
        args = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
        with self.db.tx() as conn:
            message = conn.execute(
                "SELECT m.pk FROM chat_messages m JOIN chats c ON c.pk = m.chat_pk WHERE m.id = ? AND c.org_id = ?",
                (message_id, org_id),
            ).fetchone()
            if message is None:
                raise ChatNotFound(message_id)
            conn.execute(
                "INSERT INTO chat_tool_calls (id, message_pk, turn, tool, arguments, result_chars, duration_ms,"
                " error, created_ms) VALUES (?,?,?,?,?,?,?,?,?)",
                (call_id, message[0], turn, tool, args, result_chars, duration_ms, error, created),
            )
        return ToolCallRow(
            id=call_id,
            message_id=message_id,
            turn=turn,
            tool=tool,
            arguments=json.loads(args),
            result_chars=result_chars,
            duration_ms=duration_ms,
            error=error,
            created_at=_dt(created),
        )

    def charge(
        self,
        org_id: str,
        message_id: str,
        *,
        turn: int,
        model: str,
        usage: Usage,
        cost_millicents: int,
        now: datetime | None = None,
    ) -> bool:
        """Record one model call's usage and cost; False (and nothing stored) when that turn of that
        answer was charged already."""
        moment = now or datetime.now(UTC)
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO debugger_usage (org_id, month, message_id, turn, model, input_tokens, output_tokens,"
                " cost_millicents, created_ms) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(message_id, turn) DO NOTHING",
                (
                    org_id,
                    month_of(moment),
                    message_id,
                    turn,
                    model,
                    usage.input_tokens,
                    usage.output_tokens,
                    cost_millicents,
                    _ms(moment),
                ),
            )
            return cur.rowcount == 1

    def spent_millicents(self, org_id: str, month: str) -> int:
        with self.db.read() as conn:
            (total,) = conn.execute(
                "SELECT coalesce(sum(cost_millicents), 0) FROM debugger_usage WHERE org_id = ? AND month = ?",
                (org_id, month),
            ).fetchone()
        return int(total)


def _tool_calls(conn: sqlite3.Connection, message_pks: Sequence[int]) -> dict[int, list[ToolCallRow]]:
    out: dict[int, list[ToolCallRow]] = {}
    if not message_pks:
        return out
    marks = ",".join("?" * len(message_pks))
    rows = conn.execute(
        "SELECT tc.message_pk, tc.id, m.id, tc.turn, tc.tool, tc.arguments, tc.result_chars, tc.duration_ms,"
        " tc.error, tc.created_ms FROM chat_tool_calls tc JOIN chat_messages m ON m.pk = tc.message_pk"
        f" WHERE tc.message_pk IN ({marks}) ORDER BY tc.pk",
        tuple(message_pks),
    ).fetchall()
    for r in rows:
        out.setdefault(r[0], []).append(
            ToolCallRow(
                id=r[1],
                message_id=r[2],
                turn=r[3],
                tool=r[4],
                arguments=json.loads(r[5]),
                result_chars=r[6],
                duration_ms=r[7],
                error=r[8],
                created_at=_dt(r[9]),
            )
        )
    return out


def _usage(conn: sqlite3.Connection, message_ids: Sequence[str]) -> dict[str, tuple[Usage, int]]:
    if not message_ids:
        return {}
    marks = ",".join("?" * len(message_ids))
    rows = conn.execute(
        "SELECT message_id, sum(input_tokens), sum(output_tokens), sum(cost_millicents) FROM debugger_usage"
        f" WHERE message_id IN ({marks}) GROUP BY message_id",
        tuple(message_ids),
    ).fetchall()
    return {r[0]: (Usage(input_tokens=r[1], output_tokens=r[2]), int(r[3])) for r in rows}


def _message(row: Sequence[Any], calls: list[ToolCallRow], usage: tuple[Usage, int] | None) -> ChatMessage:
    return ChatMessage(
        id=row[1],
        role=row[2],
        kind=row[3],
        content=row[4],
        status=row[5],
        model=row[6],
        created_at=_dt(row[7]),
        tool_calls=calls,
        usage=usage[0] if usage else None,
        cost_cents=usage[1] / 1000 if usage else None,
    )
