"""``python -m autosteer``: the same as the ``autosteer`` command."""

import sys

from autosteer.cli import main

if __name__ == "__main__":
    sys.exit(main())
