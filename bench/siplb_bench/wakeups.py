"""Who wakes a balancer's threads, where the kernel runs what they wake, and what their
sends cost by that: read from `perf record` of the scheduler's and the send calls'
tracepoints, system-wide, for a few seconds of a running benchmark step.

On the benchmark's virtual machines a wake-up whose two ends are on different CPUs is
an inter-processor interrupt, an exit to the hypervisor, and a send that wakes a peer
on the other CPU costs about twice one that wakes it on the sender's own
(docs/BENCHMARKS-HISTORY.md, "Issue 19, twentieth round"). This tells how often each
happens, for siplb's core thread or for every Kamailio process alike.

    bench/compare --systems siplb --rates 100 --trials 1 --trial-seconds 25 \\
        --no-memory --no-latency &
    sleep 12; bench/wakeups --comm siplb-core --seconds 4

The parsing and counting below are pure (tested in bench/tests/test_wakeups.py); only
`main` runs perf.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field

EVENTS = [
    "sched:sched_waking",
    "sched:sched_wakeup",
    "sched:sched_migrate_task",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_exit_sendto",
    "syscalls:sys_enter_sendmmsg",
    "syscalls:sys_exit_sendmmsg",
]

# `perf script -F comm,tid,cpu,time,event,trace`: the comm may hold spaces.
_LINE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+"
                   r"(?P<time>\d+\.\d+):\s+(?P<event>[\w:]+):\s?(?P<trace>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


@dataclass
class Event:
    time_us: float
    comm: str
    tid: int
    cpu: int
    name: str
    fields: dict


def parse(text):
    """The events of a `perf script` text, in order; lines it cannot read are skipped."""
    events = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name = m["event"].split(":")[-1]
        fields = dict(_FIELD.findall(m["trace"]))
        events.append(Event(float(m["time"]) * 1e6, m["comm"].strip(), int(m["tid"]),
                            int(m["cpu"]), name, fields))
    return events


@dataclass
class Report:
    # A send by what it woke: "nothing", "same CPU" or "other CPU"; wall microseconds
    # from its entry to its exit.
    sends: dict = field(default_factory=lambda: defaultdict(list))
    # Wake-ups of the watched threads: (waker's comm, "same CPU" / "other CPU") -> count.
    woken_by: Counter = field(default_factory=Counter)
    migrations: int = 0
    seconds: float = 0.0


def _int_field(ev, name):
    """A tracepoint's number (`pid=`, `target_cpu=`), or None when absent or unreadable."""
    try:
        return int(ev.fields.get(name, ""))
    except ValueError:
        return None


def analyse(events, comm):
    """Counts for the threads whose name is `comm` (a thread's or a process's name as the
    kernel has it: `siplb-core`, `kamailio`)."""
    report = Report()
    if events:
        report.seconds = (events[-1].time_us - events[0].time_us) / 1e6
    open_sends = {}  # tid -> {"start", "cpu", "woke": [pids]}
    waiting = defaultdict(list)  # woken pid -> wake-ups waiting for their sched_wakeup
    done_sends = []
    for ev in events:
        if ev.name in ("sys_enter_sendto", "sys_enter_sendmmsg") and ev.comm == comm:
            open_sends[ev.tid] = {"start": ev.time_us, "cpu": ev.cpu, "woke": []}
        elif ev.name in ("sys_exit_sendto", "sys_exit_sendmmsg") and ev.tid in open_sends:
            send = open_sends.pop(ev.tid)
            send["took"] = ev.time_us - send["start"]
            done_sends.append(send)
        elif ev.name == "sched_waking":
            pid = _int_field(ev, "pid")
            if pid is None:
                continue
            # A send's wake-ups run in the sender's context, so on its CPU.
            if ev.tid in open_sends:
                open_sends[ev.tid]["woke"].append(pid)
                waiting[pid].append(("send", open_sends[ev.tid]))
            if ev.fields.get("comm") == comm:
                waiting[pid].append(("woken", (ev.comm, ev.cpu)))
        elif ev.name == "sched_wakeup":
            pid = _int_field(ev, "pid")
            cpu = _int_field(ev, "target_cpu")
            if pid is None or cpu is None or not waiting.get(pid):
                continue
            # A wake-up queued to another CPU is traced there, after the send returned.
            for kind, what in waiting.pop(pid):
                if kind == "send":
                    what.setdefault("placed", []).append(cpu)
                else:
                    waker, waker_cpu = what
                    where = "same CPU" if cpu == waker_cpu else "other CPU"
                    report.woken_by[(waker, where)] += 1
        elif ev.name == "sched_migrate_task" and ev.fields.get("comm") == comm:
            report.migrations += 1
    for send in done_sends:
        if not send["woke"]:
            kind = "nothing"
        elif any(cpu != send["cpu"] for cpu in send.get("placed", [])):
            kind = "other CPU"
        elif send.get("placed"):
            kind = "same CPU"
        else:
            kind = "not seen"
        report.sends[kind].append(send["took"])
    return report


def describe(report, comm, calls_per_second=None):
    """The report as text: counts, per second and, given the load's rate, per call."""
    def per(n):
        text = f"{n / report.seconds:.1f}/s" if report.seconds else ""
        if calls_per_second and report.seconds:
            text += f", {n / report.seconds / calls_per_second:.2f} per call"
        return text

    lines = [f"# {comm}: {report.seconds:.1f} s traced"]
    lines.append("sends by what they woke (count, wall microseconds from entry to exit):")
    total = sum(len(v) for v in report.sends.values())
    for kind in ("nothing", "same CPU", "other CPU", "not seen"):
        took = report.sends.get(kind, [])
        if not took:
            continue
        share = 100 * len(took) / total
        lines.append(f"  {kind:<10} {len(took):6d} ({share:4.1f}%, {per(len(took))}) "
                     f"median {statistics.median(took):.1f} us, "
                     f"sum {sum(took) / 1000:.1f} ms")
    lines.append("woken by (waker, where the kernel ran it):")
    for (waker, where), n in report.woken_by.most_common(8):
        lines.append(f"  {waker:<16} {where:<10} {n:6d} ({per(n)})")
    lines.append(f"migrations between CPUs: {report.migrations} ({per(report.migrations)})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comm", default="siplb-core",
                        help="the threads to watch, by name (default siplb-core; "
                             "kamailio for all of Kamailio's processes)")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long to trace")
    parser.add_argument("--rate", type=float,
                        help="the load's calls per second, to give counts per call")
    parser.add_argument("--script", help="read this `perf script` output instead of tracing")
    args = parser.parse_args(argv)
    if args.script:
        with open(args.script) as f:
            text = f.read()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "perf.data")
            record = ["perf", "record", "-q", "-a", "-o", data]
            for event in EVENTS:
                record += ["-e", event]
            record += ["--", "sleep", str(args.seconds)]
            script = ["perf", "script", "-i", data, "-F", "comm,tid,cpu,time,event,trace"]
            try:
                subprocess.run(record, check=True, stdout=subprocess.DEVNULL)
                text = subprocess.run(script, check=True, capture_output=True,
                                      text=True).stdout
            except (OSError, subprocess.CalledProcessError) as e:
                print(f"perf failed: {e}", file=sys.stderr)
                return 1
    print(describe(analyse(parse(text), args.comm), args.comm, args.rate))
    return 0
