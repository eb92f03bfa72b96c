"""Opening the files SIPp, perf, callgrind and heaptrack leave in a trial's directory and
handing their lines to the parser of the same job in stats.py. The files are read line
by line, never whole: a short message trace at thousands of calls/s is large.
"""

import os

from siplb_bench import stats
from siplb_bench.layout import UAS_IPS


def read_sipp_stats(path):
    """The last line of a SIPp statistics file, as a dict."""
    with open(path, newline="") as f:
        return stats.last_stat_row(f)


def read_setup_latencies(path, hold=None):
    """stats.setup_latencies of the caller's short message trace at `path`."""
    with open(path, errors="replace") as f:
        return stats.setup_latencies(f, hold)


def read_uas_hold_ms(d):
    """stats.uas_hold_ms of the destinations' short message traces in trial directory `d`
    (uas1_short.log...; a destination without one is skipped)."""
    paths = [os.path.join(d, f"uas{i + 1}_short.log") for i in range(len(UAS_IPS))]
    return stats.uas_hold_ms(_lines_of(paths, errors="replace"))


def read_rtd_ms(d):
    """SIPp's response times (ms) from every `*_rtt.csv` in trial directory `d`."""
    paths = [os.path.join(d, name) for name in os.listdir(d) if name.endswith("_rtt.csv")]
    return stats.rtd_values(_lines_of(paths))


def read_perf_counters(path):
    with open(path) as f:
        return stats.perf_counters(f)


def read_callgrind_functions(path):
    with open(path, errors="replace") as f:
        return stats.callgrind_functions(f)


def read_heap_by_path(path):
    with open(path, errors="replace") as f:
        return stats.heap_by_path(f)


def _lines_of(paths, errors=None):
    """The lines of these files, one file after the other; a missing one is skipped.
    Each is opened only when the one before has been read."""
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, errors=errors) as f:
            yield from f
