"""Where the stress scripts keep things: the repository, reports and the data cache."""

from __future__ import annotations

from pathlib import Path

STRESS = Path(__file__).resolve().parents[1]
# The repository root: servers are started from here, and paths are shown from here.
REPO = STRESS.parent
# Sample CSVs and result databases, built once and reused (git ignores it).
CACHE = STRESS / ".cache"
# One folder or file per run (git ignores it).
REPORTS = STRESS / "reports"
