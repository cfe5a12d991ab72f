"""pytest-playwright on Debian's Chromium (`/usr/bin/chromium`, or `MOLAR_CHROMIUM`), as root."""

from __future__ import annotations

import os
from typing import Any

import pytest


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_type_launch_args,
        "executable_path": os.environ.get("MOLAR_CHROMIUM", "/usr/bin/chromium"),
        "args": ["--no-sandbox"],
    }
