"""Two builds of siplb measured alternately (`bench/ab-builds`): how issue 19 decides
whether a change to siplb is kept.

One trial of `bench/compare`'s CPU steps, siplb alone, is one invocation; the two builds
take turns, and the order is swapped every pair (A B, B A, A B ...) so that a machine
whose speed drifts through the series does not favour the build that always runs
second. Per step the report gives each build's median CPU s per 1000 calls, the median
of the pairs' ratios B / A (each pair run minutes apart, so a ratio compares like with
like), and in how many pairs B used less.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys

from .log import log
from .runs import cpu_by_step
from .steps import siplb_steps_argv


def order(pair):
    """The builds' turns in pair number `pair` (from 0): A first in even pairs."""
    return ("A", "B") if pair % 2 == 0 else ("B", "A")


def pair_dir(out, pair, build):
    return os.path.join(out, f"pair{pair + 1:02d}-{build}")


def clean_cpu(rows):
    """{rate: CPU s per 1000 calls} of siplb's clean kept trials among compare-trials.csv's
    rows (one per rate in an invocation; a trial run again for steal is not kept)."""
    return {rate: cpu for (system, rate), trials in cpu_by_step(rows).items() if system == "siplb"
            for clean, cpu in trials if clean}


def read_clean_cpu(results):
    """clean_cpu of one invocation's results directory; None if it left no trials file."""
    path = os.path.join(results, "compare-trials.csv")
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        return clean_cpu(csv.DictReader(f))


def pairs_by_rate(pairs):
    """[(A's {rate: cpu}, B's {rate: cpu})] -> {rate: [(a, b)]}, a rate kept in a pair only
    where both builds' trials were clean."""
    by_rate = {}
    for a, b in pairs:
        for rate in sorted(set(a) & set(b)):
            by_rate.setdefault(rate, []).append((a[rate], b[rate]))
    return by_rate


def summary_rows(by_rate):
    """Per step: (rate, pairs, A's median, B's median, median of B / A, pairs where B < A)."""
    rows = []
    for rate, got in sorted(by_rate.items()):
        rows.append((rate, len(got),
                     statistics.median(a for a, _ in got),
                     statistics.median(b for _, b in got),
                     statistics.median(b / a for a, b in got),
                     sum(b < a for a, b in got)))
    return rows


def report(rows, a_name, b_name):
    lines = [f"A: {a_name}", f"B: {b_name}", "",
             "| calls/s | pairs | A, CPU s per 1000 calls | B | B / A, median of the pairs | pairs where B used less |",
             "|---|---|---|---|---|---|"]
    for rate, n, a, b, ratio, less in rows:
        lines.append(f"| {rate} | {n} | {a:.3f} | {b:.3f} | {ratio:.3f} | {less} of {n} |")
    return "\n".join(lines) + "\n"


def read_series(out):
    """The pairs a series left in `out` (both builds' trials there), in order."""
    pairs = []
    pair = 0
    while os.path.isdir(pair_dir(out, pair, "A")) or os.path.isdir(pair_dir(out, pair, "B")):
        a = read_clean_cpu(pair_dir(out, pair, "A"))
        b = read_clean_cpu(pair_dir(out, pair, "B"))
        if a is not None and b is not None:
            pairs.append((a, b))
        pair += 1
    return pairs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="+",
                    help="directory for the series (one subdirectory per invocation) and ab.md; "
                         "with --report-only, several series may be read together")
    ap.add_argument("--a", help="build A, the one a change starts from")
    ap.add_argument("--b", help="build B, the changed one")
    ap.add_argument("--rates", default="100,200,400", help="steps (calls/s)")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--trial-seconds", type=float, default=10.0)
    ap.add_argument("--report-only", action="store_true", help="only read what a series left in OUT")
    args = ap.parse_args(argv)
    names = (args.a or "A", args.b or "B")
    if not args.report_only:
        if not (args.a and args.b):
            ap.error("--a and --b are needed to run a series")
        if len(args.out) != 1:
            ap.error("a series is run into one directory")
        if os.path.isdir(args.out[0]) and os.listdir(args.out[0]):
            # Its pairs would be read with the new ones.
            ap.error(f"{args.out[0]} is not empty: a series is run into a new directory")
        for build in (args.a, args.b):
            if not os.access(build, os.X_OK):
                ap.error(f"{build} is not an executable siplb")
        if os.geteuid() != 0:
            print("bench/ab-builds runs as root (it uses bench/compare)", file=sys.stderr)
            return 2
        out = args.out[0]
        os.makedirs(out, exist_ok=True)
        binaries = {"A": args.a, "B": args.b}
        for pair in range(args.pairs):
            for build in order(pair):
                log(f"pair {pair + 1} of {args.pairs}: {build} ({binaries[build]})")
                subprocess.run(siplb_steps_argv(binaries[build], pair_dir(out, pair, build), args.rates,
                                                args.trial_seconds),
                               check=True, stdout=subprocess.DEVNULL)
    pairs = [p for out in args.out for p in read_series(out)]
    text = report(summary_rows(pairs_by_rate(pairs)), *names)
    if len(args.out) == 1:
        with open(os.path.join(args.out[0], "ab.md"), "w") as f:
            f.write(text)
    print(text, end="")
    return 0
