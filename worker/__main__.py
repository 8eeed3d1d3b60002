"""`python -m worker`: the worker program (see worker/cli.py)."""

import sys

from worker.cli import main

sys.exit(main())
