"""bench/compare --profile: where siplb's CPU and memory go. callgrind (instructions and
call counts) on a bounded low-rate run, perf (samples and per-call counters, Kamailio's
beside siplb's) and strace (system calls) at a moderate rate, heaptrack (heap by
allocating code path) with long calls up. Each writes a text file into the results.
"""

import os
import re
import shutil
import signal
import subprocess
import time

from siplb_bench.layout import KAMAILIO, ROOT, SCENARIOS, SIPLB, SIPP_BUFFER, UAC_IP
from siplb_bench.log import log
from siplb_bench.peers import ensure_apt, start_kamailio, start_siplb, start_uas
from siplb_bench.procs import run
from siplb_bench.readers import read_callgrind_functions, read_heap_by_path, read_perf_counters, read_sipp_stats
from siplb_bench.stats import stat_int
from siplb_bench.system import session_members
from siplb_bench.trials import run_trial


def profile_phase(bench, results):
    """Where siplb's CPU goes: callgrind (instructions and call counts, user space) on a
    bounded low-rate run, and perf (on-CPU samples, kernel included) at a moderate rate;
    where its memory goes: heaptrack. `--profile-tools` picks some of the three."""
    needed = {"valgrind": "valgrind", "perf": "linux-perf", "strace": "strace"}
    missing = [pkg for cmd, pkg in needed.items() if shutil.which(cmd) is None]
    if missing:
        ensure_apt(missing)
    tools = bench.args.profile_tools
    out = {}
    if "callgrind" in tools:
        out["callgrind"] = callgrind_profile(bench, results)
    if "perf" in tools:
        out["perf"] = perf_profile(bench, results)
    if "heap" in tools:
        out["heap"] = heap_profile(bench, results)
    return out


def callgrind_profile(bench, results):
    """Instructions per call by function, user space, all threads (callgrind)."""
    args, binary, work, procs = bench.args, bench.binary, bench.work, bench.procs
    d = os.path.join(work, "profile")
    os.makedirs(d, exist_ok=True)
    # callgrind runs every thread on one core, some 50 times slower: few calls, low rate.
    cg = os.path.join(d, "callgrind.out")
    p, pids = start_siplb(procs, binary, work, name="siplb-callgrind",
                          wrapper=("valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                                   "--dump-instr=no", "--separate-threads=no"), persist=bench.persist, cluster=bench.cluster)
    log(f"profile: callgrind, {args.profile_calls} calls at {args.profile_rate}/s")
    time.sleep(2)
    run(["callgrind_control", "--zero", str(p.pid)])  # leave start-up out
    row = run_trial(bench, "callgrind", SIPLB, pids, args.profile_rate, args.profile_calls)
    run(["callgrind_control", "--dump=load", str(p.pid)])
    procs.stop(p, signal.SIGTERM, grace=30)
    dumped = sorted((os.path.join(d, n) for n in os.listdir(d) if n.startswith("callgrind.out.")),
                    key=os.path.getmtime)[0]
    funcs = read_callgrind_functions(dumped)
    n = max(1, row["successful"])
    total = sum(v[0] for v in funcs.values())
    kamailio = callgrind_kamailio(bench, d)
    path = os.path.join(results, "profile-callgrind.txt")
    with open(path, "w") as f:
        f.write(f"# bench/compare --profile: siplb under callgrind, counters zeroed just before the load:\n"
                f"# {row['successful']} calls ({args.profile_calls} offered at {args.profile_rate}/s, "
                f"{row['why_not_clean'] or 'clean'}); {total:,} instructions, {total / n:,.0f} per call.\n")
        if kamailio:
            kcalls, ktotal, kprocs, why = kamailio
            f.write(f"# Kamailio under callgrind, the same load, all of its {kprocs} processes: {kcalls} calls "
                    f"({why or 'clean'}); {ktotal:,} instructions, {ktotal / max(1, kcalls):,.0f} per call; "
                    f"siplb / Kamailio {total / n / max(1.0, ktotal / max(1, kcalls)):.2f}.\n")
        f.write("# Columns: per SIP call, instructions in the function itself, including its callees, "
                "and calls to it.\n\n")
        for title, key in (("By instructions in the function itself", 0), ("By instructions including callees", 1),
                           ("By calls", 2)):
            f.write(f"## {title}\n\n{'self Ir':>10} {'incl Ir':>10} {'calls':>8}  function\n")
            for name, (s_ir, i_ir, c) in sorted(funcs.items(), key=lambda kv: -kv[1][key])[:45]:
                f.write(f"{s_ir / n:>10,.0f} {i_ir / n:>10,.0f} {c / n:>8.1f}  {name[:150]}\n")
            f.write("\n")
    return path


def callgrind_kamailio(bench, d):
    """Kamailio's instructions per call under the same load as siplb's callgrind run,
    over all of its processes (callgrind follows the workers it forks): user space,
    as siplb's figure. (calls, instructions, processes, why not clean), or None
    without Kamailio."""
    if not shutil.which("kamailio"):
        return None
    args, work, procs = bench.args, bench.work, bench.procs
    out = os.path.join(d, "kamailio-callgrind")
    os.makedirs(out, exist_ok=True)
    wrapper = ("valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-instr=no",
               f"--callgrind-out-file={out}/callgrind.out.%p")
    p, pids = start_kamailio(procs, work, children=args.kamailio_children, tuned=not args.kamailio_default,
                             wrapper=wrapper, slow_start=True)
    for pid in pids:
        run(["callgrind_control", "--zero", str(pid)])  # leave start-up out
    log(f"profile: callgrind on Kamailio, {args.profile_calls} calls at {args.profile_rate}/s")
    row = run_trial(bench, "callgrind-kamailio", KAMAILIO, pids, args.profile_rate, args.profile_calls)
    for pid in pids:
        run(["callgrind_control", "--dump=load", str(pid)])
    procs.stop(p, signal.SIGTERM, grace=30)
    # The dumps asked for above; the files each process writes as it exits come after.
    total = 0
    for pid in pids:
        dumps = sorted((os.path.join(out, n) for n in os.listdir(out)
                        if n.startswith(f"callgrind.out.{pid}.")), key=os.path.getmtime)
        if dumps:
            with open(dumps[0], errors="replace") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("summary:")), 0)
    return row["successful"], total, len(pids), row["why_not_clean"]


def perf_profile(bench, results):
    """perf: real speed, all threads, kernel included; and how many context switches
    and system calls a call costs, beside Kamailio's under the same load."""
    args, binary, work, procs = bench.args, bench.binary, bench.work, bench.procs
    d = os.path.join(work, "profile")
    os.makedirs(d, exist_ok=True)
    p, pids = start_siplb(procs, binary, work, name="siplb-perf", workers=args.workers, persist=bench.persist, cluster=bench.cluster)
    perf_data = os.path.join(d, "perf.data")
    rec = procs.start("perf", ["perf", "record", "-F", "999", "-g", "-p", str(p.pid), "-o", perf_data], d)
    pstat = procs.start("perf-stat", ["perf", "stat", "-x", ",", "-o", os.path.join(d, "perf-stat.csv"),
                                      "-e", "task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter",
                                      "-p", str(p.pid)], d)
    time.sleep(1)
    log(f"profile: perf, {args.profile_perf_rate * 10} calls at {args.profile_perf_rate}/s")
    row = run_trial(bench, "perf", SIPLB, pids, args.profile_perf_rate, args.profile_perf_rate * 10)
    procs.stop(pstat, signal.SIGINT, grace=30)
    procs.stop(rec, signal.SIGINT, grace=30)
    procs.stop(p)
    n = max(1, row["successful"])
    counters = read_perf_counters(os.path.join(d, "perf-stat.csv"))
    # The same counters for Kamailio under the same load, for comparison.
    kcounters, krow = {}, None
    if shutil.which("kamailio"):
        kp, kpids = start_kamailio(procs, work, children=args.kamailio_children, tuned=not args.kamailio_default)
        kstat = procs.start("perf-stat-kamailio", [
            "perf", "stat", "-x", ",", "-o", os.path.join(d, "perf-stat-kamailio.csv"),
            "-e", "task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter",
            "-p", ",".join(str(x) for x in kpids)], d)
        time.sleep(1)
        krow = run_trial(bench, "kamailio", KAMAILIO, kpids, args.profile_perf_rate, args.profile_perf_rate * 10)
        procs.stop(kstat, signal.SIGINT, grace=30)
        procs.stop(kp)
        kcounters = read_perf_counters(os.path.join(d, "perf-stat-kamailio.csv"))
    # strace: which system calls (its overhead makes this run slow: fewer calls, lower rate).
    p, pids = start_siplb(procs, binary, work, name="siplb-strace", workers=args.workers, persist=bench.persist, cluster=bench.cluster)
    st_out = os.path.join(d, "strace.txt")
    tr = procs.start("strace", ["strace", "-c", "-f", "-o", st_out, "-p", str(p.pid)], d)
    time.sleep(1)
    srow = run_trial(bench, "strace", SIPLB, pids, 100, 2000)
    procs.stop(tr, signal.SIGINT, grace=30)
    procs.stop(p)
    path = os.path.join(results, "profile-perf.txt")
    report_args = ["perf", "report", "-i", perf_data, "--no-children", "--stdio"]
    by_symbol = subprocess.run(report_args + ["-g", "none", "--percent-limit", "0.7", "--sort", "dso,symbol"],
                               capture_output=True, text=True).stdout
    by_dso = subprocess.run(report_args + ["-g", "none", "--sort", "dso"], capture_output=True, text=True).stdout
    callers = subprocess.run(report_args + ["-g", "caller,0.5,callee,function,percent", "--percent-limit", "10",
                                            "--sort", "symbol"], capture_output=True, text=True).stdout
    clean = lambda text: "\n".join(l.rstrip() for l in text.splitlines() if l.strip() and not l.startswith("#"))  # noqa: E731
    with open(path, "w") as f:
        f.write(f"# bench/compare --profile: siplb under perf record -F 999 -g, {row['successful']} calls "
                f"at {args.profile_perf_rate}/s ({row['why_not_clean'] or 'clean'}), "
                f"{row['cpu_s_per_1000_calls']} CPU s per 1000 calls with perf attached\n\n")
        f.write("## Per call (perf stat, same load)\n\n")
        f.write(f"{'':>24}  {'siplb':>10}  {'Kamailio':>10}\n")
        for k, v in counters.items():
            kv = kcounters.get(k)
            kn = max(1, krow["successful"]) if krow else 1
            f.write(f"{k:>24}: {v / n:10.3f}  {(f'{kv / kn:10.3f}' if kv is not None else '-'):>10}"
                    + ("  (ms of CPU)" if k == "task-clock" else "") + "\n")
        f.write("\n## Where the samples fall: by binary\n\n" + clean(by_dso) + "\n")
        f.write("\n## By function (self)\n\n" + clean(by_symbol) + "\n")
        f.write("\n## Call chains into the top functions\n\n" + clean(callers)[:12000] + "\n")
        f.write(f"\n## System calls (strace -c -f, {srow['successful']} calls at 100/s)\n\n")
        with open(st_out) as s_in:
            body = s_in.read()
        f.write(body)
        f.write("\nper call: " + ", ".join(
            f"{m.group(2)} {int(m.group(1)) / max(1, srow['successful']):.1f}"
            for m in re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", body, re.M)) + "\n")
    return path


def heap_profile(bench, results):
    """Where siplb's memory goes with calls up: heaptrack, bytes at the heap's peak
    (the end of the ramp, INVITE transactions included) by the allocating code path."""
    args, work, procs = bench.args, bench.work, bench.procs
    if shutil.which("heaptrack") is None:
        ensure_apt(["heaptrack"])
    calls, rate = args.profile_heap_calls, 500
    d = os.path.join(work, "heap")
    os.makedirs(d)
    # heaptrack sees only malloc: profile a build with the system allocator instead of
    # jemalloc (the `jemalloc` feature off), in a target directory of its own.
    target = os.path.join(ROOT, "target", "system-alloc")
    log("profile: building siplb with the system allocator for heaptrack")
    subprocess.run(["cargo", "build", "--release", "-p", "siplb", "--no-default-features",
                    "--target-dir", target], cwd=ROOT, check=True)
    binary = os.path.join(target, "release", "siplb")
    data = os.path.join(d, "heaptrack.siplb")
    p, _pids = start_siplb(procs, binary, work, name="siplb-heaptrack", workers=args.workers, capacity=calls * 2,
                           wrapper=("heaptrack", "-o", data), persist=bench.persist, cluster=bench.cluster)
    # heaptrack runs siplb as its child: signal and measure that one.
    child = next(x for x in session_members(p.pid) if open(f"/proc/{x}/comm").read().strip() == "siplb")
    log(f"profile: heaptrack, {calls} long calls at {rate}/s")
    uas = start_uas(procs, d, 3600)
    uac = procs.start("uac-heap", [
        "sipp", f"{SIPLB[0]}:{SIPLB[1]}", "-sf", os.path.join(SCENARIOS, "uac.xml"), "-s", "1000",
        "-i", UAC_IP, "-p", "5097", "-nostdin", "-buff_size", str(SIPP_BUFFER), "-r", str(rate),
        "-m", str(calls), "-l", str(calls + 10), "-d", "3600000", "-timeout", "600s",
        "-trace_stat", "-stf", "uac.csv", "-fd", "1"], d)
    time.sleep(calls / rate + 5)
    st = read_sipp_stats(os.path.join(d, "uac.csv"))
    answered = sum(stat_int(st, k) for k in st if k.startswith("ResponseTimeRepartition1_"))
    procs.stop(uac, signal.SIGKILL)
    for u in uas:
        procs.stop(u, signal.SIGKILL)
    os.kill(child, signal.SIGTERM)
    procs.wait(p, 120)
    stacks = os.path.join(d, "stacks.txt")
    zst = next(os.path.join(d, n) for n in os.listdir(d) if n.startswith("heaptrack.siplb"))
    summary = subprocess.run(["heaptrack_print", "-f", zst, "-p", "0", "-a", "0", "-T", "0", "-F", stacks,
                              "--flamegraph-cost-type", "peak"], capture_output=True, text=True).stdout
    rows = read_heap_by_path(stacks)
    n = max(1, answered)
    path = os.path.join(results, "profile-heap.txt")
    with open(path, "w") as f:
        f.write(f"# bench/compare --profile: siplb under heaptrack, {answered} long calls set up at {rate}/s; heap\n"
                f"# at its peak (end of the ramp: calls plus their INVITE transactions, which end 32 s later),\n"
                f"# by allocating code path (innermost frames, allocator plumbing left out), bytes per call up.\n"
                f"# siplb built with --no-default-features (the system allocator, which heaptrack sees,\n"
                f"# instead of jemalloc); the bytes allocated are the same, the RSS is not.\n\n")
        for line in summary.splitlines():
            if line.startswith(("peak heap memory", "peak RSS", "calls to allocation", "total runtime")):
                f.write(line + "\n")
        f.write("\n")
        for key, b in sorted(rows.items(), key=lambda kv: -kv[1])[:25]:
            f.write(f"{b / n:8.0f} B/call  {key[:300]}\n")
    return path
