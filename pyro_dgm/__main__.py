"""``python -m pyro_dgm``: the ``pyro-dgm`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
