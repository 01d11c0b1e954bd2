"""``python -m converter ARGS`` is ``edge convert ARGS``."""

import sys

from edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
