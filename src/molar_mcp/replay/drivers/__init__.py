"""Replay drivers for registered projects: Playwright tests and generic commands."""
