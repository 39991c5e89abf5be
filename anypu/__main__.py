"""``python -m anypu …``: the ``anypu`` command line."""

import sys

from anypu._cli import main

sys.exit(main())
