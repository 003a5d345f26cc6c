"""``python -m agent_comms_claude_code``: the same as the ``agent-comms-claude-code`` command."""

import sys

from agent_comms_claude_code import main

if __name__ == "__main__":
    sys.exit(main())
