"""replay layer."""
