"""`python -m siglip_search` runs the same command line as `siglip-search`."""

import sys

from .cli import main

sys.exit(main())
