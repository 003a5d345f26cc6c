"""``python -m agent_comms_mcp``: the same as the ``agent-comms-mcp`` command."""

import sys

from agent_comms_mcp import main

if __name__ == "__main__":
    sys.exit(main())
