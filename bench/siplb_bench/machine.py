"""What a report says the figures were measured on: the machine (CPU, cores, memory,
kernel), the versions of SIPp and Kamailio, and the siplb tree's git revision."""

import os
import re
import shutil
import subprocess

from siplb_bench.layout import ROOT
from siplb_bench.procs import run


def git_rev():
    try:
        rev = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
        dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--", "crates"]).strip()
        return rev + ("+changes" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def machine_info():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
        "sipp": sipp_version(),
        "kamailio": run(["kamailio", "-v"]).splitlines()[0].strip() if shutil.which("kamailio") else "-",
    }


def sipp_version():
    r = subprocess.run(["sipp", "-v"], capture_output=True, text=True)  # exits 99
    m = re.search(r"SIPp v[0-9.]+", r.stdout + r.stderr)
    return m.group(0) if m else "SIPp"
