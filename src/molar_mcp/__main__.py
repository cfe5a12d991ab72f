"""`python -m molar_mcp` is `molar-mcp`."""

import sys

from molar_mcp.cli import main

sys.exit(main())
