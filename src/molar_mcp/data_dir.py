"""Where the embedded store lives when no `--data-dir` is given (light: every command asks it first)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def default_data_dir() -> Path:
    """`MOLAR_DATA_DIR`, else the per-user data directory."""
    env = os.environ.get("MOLAR_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("molar-mcp", appauthor=False))
