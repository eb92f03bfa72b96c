"""The one progress line format of the benchmarks: a wall-clock time, then the message,
flushed at once so that a long run can be followed (and its log read after a crash)."""

import time


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
