"""Mask secrets in trace payloads before they reach a model (PRODUCT.md requirement 8).

The rules live in `molar_mcp.models.masking`, shared with the debugger chat (which cannot import `mcp`).
"""

from molar_mcp.models.masking import MASK, mask, mask_text

__all__ = ["MASK", "mask", "mask_text"]
