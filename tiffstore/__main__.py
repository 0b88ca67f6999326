"""``python -m tiffstore``: the same as the ``tiffstore`` command."""

import sys

from tiffstore.cli.main import main

sys.exit(main())
