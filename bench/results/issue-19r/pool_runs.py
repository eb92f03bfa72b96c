"""Pools the trials of several full runs of bench/compare (their compare-trials.csv):
per step, each run's ratio of medians, and the ratio of the medians of all their
clean trials. Usage: python3 pool_runs.py RUN_DIR [RUN_DIR ...]

The reading lives in bench/siplb_bench/runs.py (tested in bench/tests/test_runs.py);
this script, cited by issue 19's rounds, calls it."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from siplb_bench.runs import pooled_main  # noqa: E402

if __name__ == "__main__":
    pooled_main(sys.argv[1:])
