"""`python -m distgan.cli`."""

import sys

from distgan.cli import main

sys.exit(main())
