"""`python -m ascendra.cli` is the `ascendra` command."""

import sys

from ascendra.cli import main

sys.exit(main())
