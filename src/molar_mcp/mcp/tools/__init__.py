"""One module per MCP tool; each exposes `register(server)` and its `SPEC` for the capability manifest."""
