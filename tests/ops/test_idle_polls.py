"""Idle replicas do not query the database on a fixed beat: the OTLP sweeper and the replay queue worker
look less and less often while they find nothing (up to 8 × their interval), and come back to their
interval as soon as there is work."""

from __future__ import annotations

import pytest

from molar_mcp.api.otlp import sweeper_wait
from molar_mcp.replay.service import ReplayService, ReplaySettings
from molar_mcp.store import SqliteTraceStore
from molar_mcp.store.replays import ReplayStore


def test_the_otlp_sweeper_waits_its_interval_while_traces_are_open_then_doubles_up_to_eight_times() -> None:
    assert [sweeper_wait(1.0, rounds) for rounds in range(7)] == [1.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert sweeper_wait(0.05, 0) == 0.05
    assert sweeper_wait(0.05, 10_000) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("poll", "lease", "waits"),
    [
        (1.0, 30.0, [1.0, 1.0, 2.0, 4.0, 8.0, 8.0]),
        # Never past a third of the lease: a replay whose replica died is taken over in time.
        (1.0, 9.0, [1.0, 1.0, 2.0, 3.0, 3.0, 3.0]),
        (0.5, 1.2, [0.4, 0.4, 0.4, 0.4, 0.4, 0.4]),
    ],
)
def test_the_replay_worker_backs_off_while_idle_within_a_third_of_the_lease(
    store: SqliteTraceStore, poll: float, lease: float, waits: list[float]
) -> None:
    service = ReplayService(store, ReplayStore(store.db), {}, settings=ReplaySettings(poll_s=poll, lease_s=lease))
    assert [service.idle_wait(rounds) for rounds in range(6)] == pytest.approx(waits)
