"""debugger layer."""
