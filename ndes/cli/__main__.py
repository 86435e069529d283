"""`python -m ndes.cli ...`, the same as the `ndes` console script."""

import sys

from ._parser import main

sys.exit(main())
