#!/usr/bin/env python3
"""siplb over Kamailio per step, read round by round: each kept siplb trial over the
Kamailio trial of its own round (`bench/compare` runs the two one after the other), the
median taken per run and over all the runs given. Where the machine drifts between
rounds or runs, a pair shares its state; a median of all trials pooled does not.

    python3 bench/results/issue-19v/paired_ratios.py RUN_DIR...

The CPU steps' trials only (not the latency section's), as `pool_runs.py` reads them;
trials marked `discarded` (run again for the host's steal) are left out, and a pair
counts only when both of its trials are clean.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "issue-19r"))

from pool_runs import cpu_by_step, trials  # noqa: E402


def pairs(run_dir):
    """{rate: [siplb / Kamailio per round]} of one run, rounds in the order they ran."""
    steps = cpu_by_step(trials(run_dir))
    out = {}
    for (system, rate), ours in steps.items():
        theirs = steps.get(("kamailio", rate), [])
        if system == "siplb" and theirs:
            out[rate] = [a / b for (ca, a), (cb, b) in zip(ours, theirs) if ca and cb and b > 0]
    return out


def main(run_dirs):
    runs = [pairs(d) for d in run_dirs]
    rates = sorted({rate for run in runs for rate in run})
    head = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    print(f"| calls/s | {head} | all runs' pairs |")
    print("|---" * (len(runs) + 2) + "|")
    for rate in rates:
        cells = [f"{statistics.median(run[rate]):.3f}" if run.get(rate) else "-" for run in runs]
        every = [x for run in runs for x in run.get(rate, [])]
        pooled = f"{statistics.median(every):.3f} ({len(every)} pairs)" if every else "- (no clean pair)"
        print(f"| {rate} | {' | '.join(cells)} | {pooled} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
