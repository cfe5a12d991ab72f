"""The demo app of Molar: a small shop with deliberate bugs, its scenarios and the patches that fix them.

- `shop/`: the app's source, self-contained (`python app.py --port N`); a replay copies and patches it.
- `scenarios/*.molar.md`: API journeys through the shop (docs/scenario-format.md).
- `fixes/*.diff`: unified diffs relative to `shop/` that fix the shop's bugs.
"""

from __future__ import annotations

from pathlib import Path

from molar_mcp.replay.scenario import Scenario, load_scenario

DEMO_DIR = Path(__file__).resolve().parent
SHOP_DIR = DEMO_DIR / "shop"
SCENARIOS_DIR = DEMO_DIR / "scenarios"
FIXES_DIR = DEMO_DIR / "fixes"


def scenario_paths() -> list[Path]:
    """The shipped scenario files, sorted by name."""
    return sorted(SCENARIOS_DIR.glob("*.molar.md"))


def load_demo_scenarios() -> dict[str, Scenario]:
    """Every shipped scenario, by slug."""
    scenarios = [load_scenario(path) for path in scenario_paths()]
    return {scenario.slug: scenario for scenario in scenarios}


def demo_scenario(slug: str) -> Scenario:
    """The shipped scenario `slug`; KeyError names the known slugs."""
    scenarios = load_demo_scenarios()
    if slug not in scenarios:
        raise KeyError(f"no demo scenario {slug!r}; known: {', '.join(sorted(scenarios))}")
    return scenarios[slug]


def fix_names() -> list[str]:
    """The names of the shipped fixes (`coupon-multiplier`, `webhook-route`, …)."""
    return sorted(path.name.removesuffix(".diff") for path in FIXES_DIR.glob("*.diff"))


def fix_diff(name: str) -> str:
    """The unified diff (relative to `shop/`) of the fix `name`."""
    path = FIXES_DIR / f"{name}.diff"
    if not path.is_file():
        raise KeyError(f"no demo fix {name!r}; known: {', '.join(fix_names())}")
    return path.read_text(encoding="utf-8")
