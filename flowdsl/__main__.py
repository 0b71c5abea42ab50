"""``python -m flowdsl``: the command-line interface, also installed as ``flowdsl``."""

import sys

from ._cli import main

if __name__ == "__main__":  # not when a spawned worker imports this module
    sys.exit(main())
