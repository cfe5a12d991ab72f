"""The demo shop as an app a replay can run (`running_app(demo_app_config(), …)`)."""

from __future__ import annotations

import sys

from molar_mcp.demo import SHOP_DIR
from molar_mcp.replay.apps import AppConfig

DEMO_APP_NAME = "demo-shop"  # the `app:` of the shipped scenarios


def demo_app_config(*, startup_timeout_s: float = 15.0) -> AppConfig:
    """Run the shop from a copy of `shop/` with this Python: `python app.py --port {port}`."""
    return AppConfig(
        name=DEMO_APP_NAME,
        source_dir=SHOP_DIR,
        start_command=[sys.executable, "app.py", "--port", "{port}"],
        health_path="/healthz",
        startup_timeout_s=startup_timeout_s,
        # The shop's source ships inside the molar-mcp package: a fix is promoted to the user's app, not to us.
        promote=False,
    )
