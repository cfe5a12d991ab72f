"""Integrations that run inside other tools and upload to a Molar server over HTTP: the pytest
plugin (`pytest_plugin`, a `pytest11` entry point) and what it shares (`source`, `uploader`).

They talk to Molar only through its HTTP API (httpx2), so they work against any Molar server, and
they import nothing else of this package: pytest loads the plugin in every session of an
environment that has molar-mcp installed, so importing it must stay cheap.
"""
