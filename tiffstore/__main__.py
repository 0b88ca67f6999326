"""``python -m tiffstore``: the ``tiffstore`` command."""

import sys

from .cli import main

sys.exit(main())
