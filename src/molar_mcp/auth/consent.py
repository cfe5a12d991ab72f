"""Consent tickets: an approval is valid only for the exact authorization request the consent page
showed (client, redirect URI, scopes, resource, PKCE challenge and state), only once, only for the
person who saw it, and only for a few minutes.

The page carries a random ticket; the server keeps what the ticket was issued for. Posting the form
takes the ticket out (single use) and compares the request with the one shown; the authorization then
runs on the stored request, never on the one submitted. Tickets live in memory (a restart invalidates
the open consent pages, which only means "Go back and start again"), bounded in number.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

# The parameters that decide what a code buys: a different value of any of these is another request.
BOUND_PARAMETERS: Final = (
    "client_id",
    "redirect_uri",
    "scope",
    "resource",
    "code_challenge",
    "code_challenge_method",
    "response_type",
    "state",
)


def binding(items: Sequence[tuple[str, str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The bound parameters of an authorization request, every value of each (repeats included)."""
    return tuple((name, tuple(v for n, v in items if n == name)) for name in BOUND_PARAMETERS)


@dataclass(frozen=True)
class _Ticket:
    user_id: str
    query: str
    bound: tuple[tuple[str, tuple[str, ...]], ...]
    expires_at: float


class ConsentTickets:
    def __init__(self, *, ttl: float, clock: Callable[[], float], max_open: int = 10_000) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max_open = max_open
        self._open: OrderedDict[str, _Ticket] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, user_id: str, query: str, items: Sequence[tuple[str, str]]) -> str:
        ticket = secrets.token_urlsafe(24)
        now = self._clock()
        with self._lock:
            # Oldest first: drop the expired ones and, at the cap, the oldest open one.
            while self._open and (len(self._open) >= self._max_open or self._oldest().expires_at < now):
                self._open.popitem(last=False)
            self._open[ticket] = _Ticket(user_id, query, binding(items), now + self._ttl)
        return ticket

    def _oldest(self) -> _Ticket:
        return next(iter(self._open.values()))

    def take(self, ticket: str, user_id: str, items: Sequence[tuple[str, str]]) -> str | None:
        """The query of the request shown with `ticket`, if this person may approve it now; the ticket
        is spent either way."""
        with self._lock:
            found = self._open.pop(ticket, None) if ticket else None
        if found is None or found.expires_at < self._clock() or found.user_id != user_id:
            return None
        if found.bound != binding(items):
            return None
        return found.query
