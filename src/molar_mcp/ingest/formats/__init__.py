"""Trace formats → events, one module per format (pure parsing, no I/O)."""
