"""Side-by-side benchmark: siplb against Kamailio 5.6 (dispatcher, call-load algorithm 10),
tuned as an operator who cares about speed runs it (TLSF allocator, 4 MB receive buffer,
4 GB shared memory, 4 children; --kamailio-default for the package's defaults).

Loopback only. Four SIPp destinations (UAS on 127.0.0.11..14:5060) and one SIPp caller
(UAC on 127.0.0.1) carry the same short calls through siplb (127.0.0.1:5060) and through
Kamailio (127.0.0.1:5070). The call rate steps up, three trials per step and system,
until calls fail, retransmissions appear or the offered rate is not reached. Then:
call setup latency at half of siplb's peak rate, through each balancer and directly to
a destination; siplb's resident memory with 0, 10,000 and 100,000 calls up; and, with
--profile, where siplb's CPU and memory go (callgrind, perf, strace, heaptrack).
Method and latest figures: docs/BENCHMARKS.md.

    bench/compare                 full run (about 20 minutes), results in bench/results/
    bench/compare --smoke         one low-rate step per system, under a minute once built
                                  (exit status 0 only if both systems ran it clean)
    bench/compare --profile       only the profiling runs, about 4 minutes
    bench/compare --help          every option

Runs as root; installs what it lacks from Debian's packages (sip-tester, kamailio,
sqlite3, gnuplot-nox; for --profile also valgrind, linux-perf, strace, heaptrack).
Every process it starts is ended by PID on exit, error or Ctrl-C.
"""

# This docstring is the command's --help text (parse_args): it is written for whoever
# runs bench/compare. The phases are here; trials.py holds one trial, profiling.py the
# --profile runs, report.py the files written, peers.py the processes under test.

import argparse
import csv
import datetime
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from siplb_bench.context import Bench
from siplb_bench.layout import BENCH, ROOT, SCENARIOS, SIPLB, SIPP_BUFFER, UAC_IP, UAS_IPS, UAS_PORT
from siplb_bench.log import log
from siplb_bench.machine import git_rev, machine_info
from siplb_bench.peers import check_free, ensure_packages, siplb_binary, start_siplb, start_uas
from siplb_bench.procs import Procs
from siplb_bench.profiling import profile_phase
from siplb_bench.readers import read_sipp_stats
from siplb_bench.report import chart, markdown, stolen_kept_line, write_csv
from siplb_bench.runs import cpu_by_step, round_pairs
from siplb_bench.stats import peak, slope, stat_int, summarise
from siplb_bench.system import loadavg, rss_bytes
from siplb_bench.trials import Balancer


# ---------------------------------------------------------------- the phases

def step_rates(args, systems, rates):
    """Steps the rate up; a system leaves the run after its first step that is not clean
    in all of its trials. Trials of the systems alternate, so both share the machine's
    background load."""
    rows = []
    active = list(systems)
    for rate in rates:
        if not active:
            break
        log(f"step {rate} calls/s ({args.trials} trials each: {', '.join(b.name for b in active)})")
        calls = int(rate * args.trial_seconds)
        results = {b.name: [] for b in active}
        for _ in range(args.trials):
            kept, discarded = run_round(args, active, rate, calls)
            rows += discarded
            for name, r in kept.items():
                results[name].append(r)
        rows += [r for rs in results.values() for r in rs]
        active = [b for b in active if all(r["clean"] for r in results[b.name])]
    return rows


def run_round(args, active, rate, calls):
    """One trial of each system in turn, run again (at most --steal-retries times) while
    the host took more than --max-steal % of a vCPU from the machine during any of them:
    on these virtual machines such a trial costs both systems up to twice the CPU per call
    (BENCHMARKS.md, Method), and the two trials it is compared with may not share it.
    Returns the kept trials by system, and the rows of the rounds run again, marked."""
    def one_round():
        return {b.name: b.trial(rate, calls, sample_kernel=True) for b in active}

    discarded = []
    for _ in range(max(0, args.steal_retries)):
        got = one_round()
        stolen = max(r["steal_pct"] for r in got.values())
        if stolen <= args.max_steal:
            return got, discarded
        log(f"  the host stole {stolen}% of a vCPU during that round: running it again")
        for r in got.values():
            r["discarded"] = f"steal {stolen}% over {args.max_steal}%"
        discarded += got.values()
    return one_round(), discarded


def memory_phase(bench):
    """siplb's resident memory with 0, then N1, then N2 long calls up."""
    args, procs = bench.args, bench.procs
    targets = sorted(args.memory_calls)
    log(f"memory: siplb RSS with 0, {', '.join(str(n) for n in targets)} calls up at {args.memory_rate} calls/s")
    p, _pids = start_siplb(procs, bench.binary, bench.work, name="siplb-memory", workers=args.workers,
                           capacity=max(targets) * 2, persist=bench.persist, cluster=bench.cluster)
    d = os.path.join(bench.work, "memory")
    os.makedirs(d)
    time.sleep(1.0)
    rows = [{"calls_up": 0, "rss_bytes": rss_bytes(p.pid), "bytes_per_call": ""}]
    base = rows[0]["rss_bytes"]
    log(f"  0 calls: RSS {base / 1e6:.1f} MB")
    uas = start_uas(procs, d, 3600)
    uacs, up = [], 0
    try:
        for i, n in enumerate(targets):
            more = n - up
            ramp = more / args.memory_rate
            uac = procs.start(f"uac-mem{i}", [
                "sipp", f"{SIPLB[0]}:{SIPLB[1]}", "-sf", os.path.join(SCENARIOS, "uac.xml"),
                "-s", "1000", "-i", UAC_IP, "-p", str(5090 + i), "-nostdin", "-buff_size", str(SIPP_BUFFER),
                "-r", str(args.memory_rate), "-m", str(more), "-l", str(more + 10),
                "-d", "3600000", "-timeout", f"{int(ramp + args.memory_settle + 600)}s",
                "-trace_stat", "-stf", f"uac{i}.csv", "-fd", "1"], d)
            uacs.append(uac)
            # Every call answered: SIPp measures a response time on each 200.
            t_stage = time.monotonic()
            deadline = t_stage + ramp * 3 + 60
            answered, samples = 0, []
            while time.monotonic() < deadline:
                time.sleep(1.0)
                st = read_sipp_stats(os.path.join(d, f"uac{i}.csv")) if os.path.exists(os.path.join(d, f"uac{i}.csv")) else {}
                answered = sum(stat_int(st, k) for k in st if k.startswith("ResponseTimeRepartition1_"))
                samples.append((time.monotonic() - t_stage, answered, rss_bytes(p.pid)))
                if answered + stat_int(st, "FailedCall(C)") >= more or uac.poll() is not None:
                    break
            marginal = slope([(n, r) for t, n, r in samples if t > args.memory_settle + 5])
            up += answered
            st = read_sipp_stats(os.path.join(d, f"uac{i}.csv"))
            ramp_rss = rss_bytes(p.pid)
            time.sleep(args.memory_settle)  # INVITE transactions' timers run out
            rss = rss_bytes(p.pid)
            row = {"calls_up": up, "rss_bytes": rss, "bytes_per_call": round((rss - base) / max(1, up)),
                   "rss_at_ramp_end": ramp_rss, "marginal_bytes_per_call": marginal,
                   "failed": stat_int(st, "FailedCall(C)"),
                   "retransmissions": stat_int(st, "Retransmissions(C)")}
            rows.append(row)
            log(f"  {up} calls up: RSS {rss / 1e6:.1f} MB ({row['bytes_per_call']} bytes per call; "
                + (f"{marginal} bytes per added call late in the ramp; " if marginal else "") +
                f"{ramp_rss / 1e6:.1f} MB right after the ramp; {row['failed']} failed, "
                f"{row['retransmissions']} retransmissions)")
    finally:
        for uac in uacs:
            procs.stop(uac, signal.SIGKILL)
        for u in uas:
            procs.stop(u, signal.SIGKILL)
        procs.stop(p, grace=10)
    return rows


# ---------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="one low-rate step, one trial per system, no memory phase (CI)")
    ap.add_argument("--profile", action="store_true", help="only the profiling runs of siplb (callgrind, perf)")
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")],
                    default=[100, 200, 400, 600, 800, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 3000, 3500, 4000, 5000, 6000, 7000, 8000],
                    help="call rates to step through (calls/s, comma-separated)")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--trial-seconds", type=float, default=10.0, help="seconds of calls per trial")
    ap.add_argument("--max-steal", type=float, default=5.0,
                    help="a round of trials (one per system) during which the host stole more than this %% of "
                         "a vCPU is run again")
    ap.add_argument("--steal-retries", type=int, default=2, help="how many times a round is run again at most")
    ap.add_argument("--call-ms", type=int, default=100, help="call length (pause between ACK and BYE)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                    help="worker threads of siplb's runtime beside its SIP core thread (default: cores)")
    ap.add_argument("--no-persist", action="store_true",
                    help="run siplb with [dialog] persist = false (what storing calls costs)")
    ap.add_argument("--cluster", action="store_true",
                    help="run siplb as a one-node [cluster] on the Redis at 127.0.0.1:6379 (what clustering costs)")
    ap.add_argument("--destinations", type=int, choices=range(1, 5), default=4,
                    help="how many of the four SIPp destinations the balancers send to (1 compares with the "
                         "direct path and the relay, which use the first alone)")
    ap.add_argument("--pin", action="store_true",
                    help="run the balancer on CPU 0 and every SIPp on CPU 1 (taskset): the latency of each "
                         "path without the two taking turns on one core")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the balancer (and the relay) at this nice value, e.g. -10: the latency of each "
                         "path when the SIPp processes it wakes cannot preempt it")
    ap.add_argument("--kamailio-children", type=int, default=4,
                    help="Kamailio's children= (UDP worker processes; default 4, as a tuned operator runs it on this box)")
    ap.add_argument("--kamailio-default", action="store_true",
                    help="run Kamailio on the package's default allocator (q_malloc) and 1 GB, not tuned")
    ap.add_argument("--memory-calls", type=lambda s: [int(x) for x in s.split(",")], default=[10000, 100000])
    ap.add_argument("--memory-rate", type=int, default=1000)
    ap.add_argument("--memory-settle", type=float, default=35.0,
                    help="seconds to wait after the last long call is answered before reading RSS")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--systems", type=lambda s: s.split(","), default=["siplb", "kamailio"],
                    help="systems to step through: siplb,kamailio (default both)")
    ap.add_argument("--latency-rates", type=lambda v: [int(x) for x in v.split(",") if x],
                    default=None, help="rates of the latency comparison (default: half of each "
                    "system's highest clean rate)")
    ap.add_argument("--kernel-share", action="store_true",
                    help="sample the balancers with perf during the steps: how much of their CPU is the kernel's, "
                         "and so the lowest ratio siplb's own code could reach (perf adds to both systems' CPU)")
    ap.add_argument("--no-latency", dest="latency", action="store_false",
                    help="skip the latency comparison at half of siplb's peak")
    ap.add_argument("--profile-tools", type=profile_tools, default=list(PROFILE_TOOLS),
                    help="with --profile: which of callgrind, perf, heap to run (comma-separated; default all)")
    ap.add_argument("--profile-calls", type=int, default=1500)
    ap.add_argument("--profile-rate", type=int, default=50)
    ap.add_argument("--profile-perf-rate", type=int, default=1000)
    ap.add_argument("--profile-heap-calls", type=int, default=5000)
    ap.add_argument("--siplb", help="siplb binary to use (default: target/release/siplb, built first)")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    ap.add_argument("--results", default=os.path.join(BENCH, "results"),
                    help="where results go (smoke: RESULTS/smoke)")
    ap.add_argument("--chart-only", action="store_true",
                    help="only redraw compare.png from the compare-summary.csv in --results")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and SIPp message traces")
    args = ap.parse_args()
    if args.smoke:
        args.rates, args.trials, args.trial_seconds, args.no_memory = [50], 1, 5.0, True
        # The smoke run checks that the benchmark works, not its figures: no round again.
        args.steal_retries = 0
        args.results = os.path.join(args.results, "smoke")
    return args


PROFILE_TOOLS = ("callgrind", "perf", "heap")


def profile_tools(value):
    """--profile-tools: a comma-separated subset of PROFILE_TOOLS; a misspelt name is an
    error, not a profile silently left out."""
    names = [n for n in value.split(",") if n]
    unknown = [n for n in names if n not in PROFILE_TOOLS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"pick from {', '.join(PROFILE_TOOLS)}; not {', '.join(unknown) or 'nothing'}")
    return names


def latency_rates(args, summary):
    """The rates of the latency comparison: half of each system's highest clean rate
    (the issue's "50% of the peak"; half of Kamailio's is where both are well inside
    their clean range), or the rates given with --latency-rates."""
    if args.latency_rates:
        return [(r, "given on the command line") for r in args.latency_rates]
    out = []
    for system in ("siplb", "kamailio"):
        pk = peak(summary, system)
        if pk and system in args.systems:
            rate = max(10, int(pk["rate"] / 2 // 10 * 10))
            if all(rate != r for r, _ in out):
                out.append((rate, f"half of {system}'s highest clean rate"))
    return out


def main():
    """bench/compare: returns its exit status. Every process the run starts is ended by
    PID on the way out, whichever way that is (done, error, Ctrl-C, SIGTERM, SIGHUP)."""
    procs = Procs()

    def on_signal(signum, _frame):
        log(f"signal {signum}: stopping what this script started")
        procs.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= 65536:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    try:
        return run_compare(procs)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None)
        log(f"error: {e}{(': ' + detail.strip()) if detail else ''}")
        procs.stop_all()
        return 2
    finally:
        procs.stop_all()


def run_compare(procs):
    args = parse_args()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    t_start = time.monotonic()
    if args.chart_only:
        ensure_packages(["gnuplot"])
        with open(os.path.join(args.results, "compare-summary.csv"), newline="") as f:
            summary = [dict(r, achieved_rate=float(r["achieved_rate"]), balancer_cpu_pct=float(r["balancer_cpu_pct"]),
                            cpu_s_per_1000_calls=float(r["cpu_s_per_1000_calls"]), trials=int(r["trials"]),
                            clean_trials=int(r["clean_trials"])) for r in csv.DictReader(f)]
        work = tempfile.mkdtemp(prefix="siplb-bench-")
        log(f"wrote {chart(args.results, summary, work)}")
        shutil.rmtree(work, ignore_errors=True)
        return 0
    ensure_packages(["sipp", "sqlite3", "gnuplot", "socat"] + (["kamailio"] if "kamailio" in args.systems else [])
                    + (["perf"] if args.kernel_share else []))
    binary = siplb_binary(args)
    os.makedirs(args.results, exist_ok=True)
    work = tempfile.mkdtemp(prefix="siplb-bench-")
    bench = Bench(args=args, procs=procs, binary=binary, work=work)
    log(f"work directory {work}; results into {args.results}")
    for ip in UAS_IPS:
        check_free(ip, UAS_PORT)
    info = machine_info()
    info["siplb_rev"] = (f"{os.path.relpath(binary, ROOT)} built "
                         f"{datetime.datetime.fromtimestamp(os.path.getmtime(binary)):%Y-%m-%d %H:%M} "
                         f"(tree now at {git_rev()})")
    load_before = loadavg()
    log(f"load average before: {load_before}")

    if args.profile:
        out = profile_phase(bench, args.results)
        log(f"profiles: {', '.join(out.values())}")
        finish(bench)
        return 0

    systems = [Balancer(name, bench) for name in args.systems]
    rows = step_rates(args, systems, args.rates)
    summary = summarise(rows, args.systems)
    info["steal"] = (args.max_steal, sum(1 for r in rows if r.get("discarded")))
    info["stolen_kept"] = stolen_kept_line(rows, args.max_steal)

    latency = []
    if not args.smoke and args.latency:
        paths = [Balancer("direct", bench), Balancer("relay", bench)] + systems
        for rate, why in latency_rates(args, summary):
            log(f"latency at {rate} calls/s ({why}): {', '.join(b.name for b in paths)}")
            for _ in range(args.trials):
                for b in paths:
                    r = b.trial(rate, int(rate * args.trial_seconds), uas_trace=True)
                    r["why"] = why
                    latency.append(r)

    memory = [] if args.no_memory else memory_phase(bench)
    load_after = loadavg()
    log(f"load average after: {load_after}")

    write_csv(os.path.join(args.results, "compare-trials.csv"), rows + latency)
    write_csv(os.path.join(args.results, "compare-summary.csv"), summary)
    if memory:
        write_csv(os.path.join(args.results, "memory.csv"), memory)
    png = chart(args.results, summary, work)
    text, peaks = markdown(args, info, summary, latency, memory, load_before, load_after, started,
                           time.monotonic() - t_start, round_pairs(cpu_by_step(rows)))
    with open(os.path.join(args.results, "compare.md"), "w") as f:
        f.write(text)
    print()
    print(text)
    log(f"wrote {args.results}/compare.md, compare-summary.csv, compare-trials.csv"
        f"{', memory.csv' if memory else ''}{', ' + os.path.basename(png) if png else ''}")
    finish(bench)
    if args.smoke:
        bad = [r for r in rows if not r["clean"]]
        if bad or len(rows) < len(args.systems):
            log("smoke: FAILED (" + "; ".join(f"{r['system']}: {r['why_not_clean']}" for r in bad) + ")")
            return 1
        log("smoke: passed")
    return 0


def finish(bench):
    bench.procs.stop_all()
    if bench.args.keep:
        log(f"kept {bench.work}")
    else:
        shutil.rmtree(bench.work, ignore_errors=True)
