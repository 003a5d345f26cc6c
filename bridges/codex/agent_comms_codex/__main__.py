"""``python -m agent_comms_codex``: the same as the ``agent-comms-codex`` command."""

import sys

from agent_comms_codex import main

if __name__ == "__main__":
    sys.exit(main())
