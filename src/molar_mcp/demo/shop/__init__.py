"""The demo shop's source: a self-contained folder a replay copies, patches and runs."""
