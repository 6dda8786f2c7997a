"""``python -m bot`` is ``easel run``."""

import sys

from bot.cli.entry import main

sys.exit(main(["run", *sys.argv[1:]]))
