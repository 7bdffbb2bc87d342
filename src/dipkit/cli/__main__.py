"""``python -m dipkit.cli`` = ``dipkit``."""

import sys

from . import main

sys.exit(main())
