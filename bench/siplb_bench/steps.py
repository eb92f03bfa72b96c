"""`bench/compare`'s CPU steps with siplb alone, as a command line: what the
profile-guided build trains with (`pgo.py`) and what `bench/ab-builds` runs each build
with (`ab.py`)."""

import os
import sys

from .layout import ROOT


def siplb_steps_argv(binary, results, rates, seconds):
    """bench/compare on `binary`, siplb alone, one trial of `seconds` per rate in `rates`
    ("100,200"), nothing but the CPU steps measured, nothing built, into `results`."""
    return [sys.executable, os.path.join(ROOT, "bench", "compare"), "--siplb", binary,
            "--systems", "siplb", "--rates", rates, "--trials", "1",
            "--trial-seconds", str(seconds), "--no-memory", "--no-latency", "--no-build",
            "--results", results]
