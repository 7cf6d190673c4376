"""`python -m bench` is the `xbench` command."""

import sys

from bench.cli import main

sys.exit(main())
