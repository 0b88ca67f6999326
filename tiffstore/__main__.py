"""``python -m tiffstore``: the same as the ``tiffstore`` command."""

import sys

from .cli import main

sys.exit(main())
