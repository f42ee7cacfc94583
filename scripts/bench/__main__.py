"""`python3 scripts/bench ...` (what scripts/bench.sh runs) or `python3 -m bench`."""

import os
import sys

# The inner process runs from a copy owned by postgres; leave no root-owned caches behind.
sys.dont_write_bytecode = True
if not __package__:
    # Run as a directory: import the package by its name, not its modules as top-level ones.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bench.cli import main  # noqa: E402

sys.exit(main())
