"""``python -m stress SCENARIO [options]``: result-day stress scenarios and benches.

Scenarios (``python -m stress SCENARIO --help`` for each one's options):

  seed      the seed document's load test: 700, 7,000 and 14,000 users spawned at
            700/s, against a result site of 200 lookups/s (the legacy origin)
            alone and through waitroom
  spike     N students within S seconds
  release   a release-day curve: early birds, a sharp peak, a long tail
  simulate  2,000,000 students through the real queue scripts, simulated clock
  baseline  plaintext throughput of the server stacks, and the load generator's own
  door      what one gateway worker takes: first visits, joins, queue-state polls
  gateway   the gateway benchmark (python -m stress.benches.gateway)
  lookup    the lookup backend benchmark (python -m stress.benches.lookup)
  soak      steady arrivals for a long time (python -m stress.scenarios.soak)
  ha        what Sentinel and Cluster cost: WAIT, failover time, memory per student

Reports go to stress/reports/<scenario>-<date>/ (Markdown, JSON, PNG plots).
"""

from __future__ import annotations

import importlib
import sys

SCENARIOS = {
    "seed": "stress.scenarios.seed",
    "spike": "stress.scenarios.spike",
    "release": "stress.scenarios.spike",
    "simulate": "stress.scenarios.simulate",
    "baseline": "stress.scenarios.baseline",
    "door": "stress.benches.door",
}
BENCHES = {
    "gateway": "stress.benches.gateway",
    "lookup": "stress.benches.lookup",
    "soak": "stress.scenarios.soak",
    "ha": "stress.benches.ha",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name in BENCHES:
        bench: int = importlib.import_module(BENCHES[name]).main(rest)
        return bench
    if name not in SCENARIOS:
        print(f"unknown scenario {name!r}; one of: {', '.join([*SCENARIOS, *BENCHES])}")
        return 2
    code: int = importlib.import_module(SCENARIOS[name]).main(name, rest)
    return code


if __name__ == "__main__":
    sys.exit(main())
