#!/usr/bin/env python3
"""siplb over Kamailio per step, read round by round: each kept siplb trial over the
Kamailio trial of its own round (`bench/compare` runs the two one after the other), the
median taken per run and over all the runs given. Where the machine drifts between
rounds or runs, a pair shares its state; a median of all trials pooled does not.

    python3 bench/results/issue-19v/paired_ratios.py RUN_DIR...

The CPU steps' trials only (not the latency section's), as `pool_runs.py` reads them;
trials marked `discarded` (run again for the host's steal) are left out, and a pair
counts only when both of its trials are clean. The reading lives in
bench/siplb_bench/runs.py (tested in bench/tests/test_runs.py); this script calls it.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from siplb_bench.runs import paired_main  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    paired_main(sys.argv[1:])
