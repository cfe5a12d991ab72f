"""Fixtures of the live tests."""

from __future__ import annotations

import pytest

from tests.conftest import ENGINES, engine_options


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """These tests are part of the store contract: they run on the embedded store and on PostgreSQL + S3."""
    return engine_options(request)
