"""``python -m benchmarks.policies``: what ``scripts/bench-policies`` runs."""

from benchmarks.policies.cli import main

raise SystemExit(main())
