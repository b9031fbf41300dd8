"""``python -m npcnn``: the same as the ``npcnn`` command."""

import sys

from npcnn.cli.main import main

sys.exit(main())
