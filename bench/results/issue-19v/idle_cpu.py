#!/usr/bin/env python3
"""What each balancer costs with no calls at all: siplb and tuned Kamailio started as
`bench/compare` starts them (same configuration, same processes counted), left idle,
their CPU read from their threads' nanoseconds over SECONDS, TRIALS times each,
alternating. At R calls/s an idle cost of C CPU seconds per second is C / R * 1000 CPU
seconds per 1000 calls of every trial's figure at that step.

    python3 bench/results/issue-19v/idle_cpu.py [BINARY] [SECONDS] [TRIALS]

Run as root from the checkout, with nothing else running, as `bench/compare` is.
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from siplb_bench.peers import start_kamailio, start_siplb  # noqa: E402
from siplb_bench.procs import Procs  # noqa: E402
from siplb_bench.system import cpu_snapshot, cpu_used, steal_seconds  # noqa: E402


def idle(procs, start, seconds):
    """CPU seconds per second of one fresh balancer left idle, after 2 s to settle, and
    the steal over the same time."""
    p, pids = start()
    try:
        time.sleep(2.0)
        steal0, c0, t0 = steal_seconds(), cpu_snapshot(pids), time.monotonic()
        time.sleep(seconds)
        c1, t1, steal1 = cpu_snapshot(pids), time.monotonic(), steal_seconds()
        precise, _ = cpu_used(c0, c1)
        return precise / (t1 - t0), (steal1 - steal0) / (t1 - t0)
    finally:
        procs.stop(p)


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/pgo/release/siplb")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    trials = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    procs = Procs()
    work = tempfile.mkdtemp(prefix="siplb-idle-")
    systems = {
        "siplb": lambda: start_siplb(procs, binary, work, persist=True),
        "kamailio": lambda: start_kamailio(procs, work),
    }
    try:
        for n in range(trials):
            for name, start in systems.items():
                per_s, steal = idle(procs, start, seconds)
                print(f"trial {n + 1} {name:8}: {per_s * 1000:.3f} ms CPU per second idle "
                      f"(= {per_s * 10:.3f} CPU s per 1000 calls at 100 calls/s, "
                      f"{per_s * 5:.3f} at 200), steal {steal * 100:.1f}%", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
