"""``python -m benchmarks.e2e``: what ``scripts/bench`` runs."""

import sys

from benchmarks.e2e.cli import main

sys.exit(main())
