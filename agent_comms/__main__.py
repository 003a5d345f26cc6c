"""Allow ``python -m agent_comms`` as an alias for the ``agent-comms`` command."""

import sys

from agent_comms.cli import main

if __name__ == "__main__":
    sys.exit(main())
