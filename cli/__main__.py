"""``python -m cli ARGS`` = ``irsflow ARGS`` (same parser, same exit codes), without the console script."""

import sys

from cli.main import main

sys.exit(main())
