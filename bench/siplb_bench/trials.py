"""One trial, the unit every phase of bench/compare is made of: fresh SIPp destinations, a
fresh balancer (`Balancer`), a SIPp caller sending a fixed number of calls at a fixed
rate, and the figures read back (CPU, drops, setup times, spread, why not clean).
"""

import os
import shutil
import signal
import subprocess
import time

from siplb_bench.layout import KAMAILIO, RELAY, SCENARIOS, SIPLB, SIPP_BUFFER, UAC_IP, UAS_IPS, UAS_PORT
from siplb_bench.log import log
from siplb_bench.peers import start_kamailio, start_relay, start_siplb, start_uas, stop_uas
from siplb_bench.readers import read_rtd_ms, read_setup_latencies, read_sipp_stats, read_uas_hold_ms
from siplb_bench.stats import kernel_share, pct, stat_int
from siplb_bench.system import (cpu_pressure, cpu_snapshot, cpu_used, loadavg, socket_drops, steal_seconds,
                                udp_drops)


def run_trial(bench, system, target, balancer_pids, rate, calls, trace_short=True, uas_trace=False,
              sample_kernel=False):
    """One trial: fresh destinations, `calls` calls at `rate` calls/s from one SIPp UAC to
    `target`, CPU of the balancer's processes read from /proc before and after; with
    `sample_kernel`, the kernel's share of it sampled by perf (start_kernel_sampler)."""
    args = bench.args
    n = bench.next_trial()
    d = os.path.join(bench.work, f"trial{n:03d}-{system}-{rate}")
    os.makedirs(d)
    secs = calls / rate
    uas = start_uas(bench.procs, d, int(secs + 120), trace=uas_trace, wrapper=bench.sipp_wrap)
    port = 5100 + n % 100
    limit = max(200, int(rate * (args.call_ms / 1000.0 + 1.0) * 4))
    uac_argv = [
        *bench.sipp_wrap, "sipp", f"{target[0]}:{target[1]}", "-sf", os.path.join(SCENARIOS, "uac.xml"),
        "-s", "1000", "-i", UAC_IP, "-p", str(port), "-nostdin", "-buff_size", str(SIPP_BUFFER),
        "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(limit), "-d", str(args.call_ms),
        "-recv_timeout", "10000", "-timeout", f"{int(secs + 30)}s", "-timeout_error",
        # A 180 overtaken by its 200 (Kamailio's worker processes can reorder them) is
        # ignored, as a phone would, instead of aborting the call; it is counted apart.
        "-default_behaviors", "all,-abortunexp",
        "-trace_stat", "-stf", "uac.csv", "-fd", "3600", "-trace_rtt", "-rtt_freq", "100",
        "-trace_err", "-error_file", "uac_errors.log"]
    if trace_short:
        uac_argv += ["-trace_shortmsg", "-shortmessage_file", "uac_short.log"]
    load0 = loadavg()
    m0 = cpu_pressure()
    steal0 = steal_seconds()
    drops0 = udp_drops()
    sampler = start_kernel_sampler(bench, d, balancer_pids) if sample_kernel else None
    c0 = cpu_snapshot(balancer_pids)
    t0 = time.monotonic()
    uac = bench.procs.start("uac", uac_argv, d)
    rc, uac_cpu = bench.procs.wait(uac, secs + 45)
    if rc is None:
        log(f"  {system} {rate}/s: SIPp UAC still running after {secs + 45:.0f}s; stopping it")
        rc, uac_cpu = bench.procs.stop(uac)
    wall = time.monotonic() - t0
    time.sleep(0.2)  # the balancer's last relays and timers of the trial
    c1 = cpu_snapshot(balancer_pids)
    m1 = cpu_pressure()
    steal = steal_seconds() - steal0
    share = stop_kernel_sampler(bench, d, sampler)
    drops = udp_drops() - drops0
    per_socket = socket_drops()  # the balancer's and the destinations' sockets are the trial's own
    drops_balancer = per_socket.get(f"{target[0]}:{target[1]}", 0) if system not in ("direct", "relay") else 0
    drops_uas = sum(per_socket.get(f"{ip}:{UAS_PORT}", 0) for ip in UAS_IPS)
    counts, uas_retrans, uas_unexpected, uas_cpu = stop_uas(bench.procs, d, uas)
    st = read_sipp_stats(os.path.join(d, "uac.csv"))
    ok, failed = stat_int(st, "SuccessfulCall(C)"), stat_int(st, "FailedCall(C)")
    retrans = stat_int(st, "Retransmissions(C)")
    if trace_short:
        hold = read_uas_hold_ms(d) if uas_trace else None
        lat, path_lat, achieved, late = read_setup_latencies(os.path.join(d, "uac_short.log"), hold)
    else:
        lat, path_lat, achieved, late = [], [], 0.0, 0
    rtd = read_rtd_ms(d)
    reasons = []
    if failed or ok < calls:
        reasons.append(f"{calls - ok} calls failed")
    if retrans or uas_retrans:
        reasons.append(f"{retrans + uas_retrans} retransmissions")
    if trace_short and achieved < 0.95 * rate:
        reasons.append(f"offered {rate}/s, SIPp reached {achieved:.0f}/s")
    bcpu, bcpu_ticks = cpu_used(c0, c1)
    busy = (m1 - m0) / 1e6 / (time.monotonic() - t0) * 100.0
    row = {
        "system": system, "rate": rate, "calls": calls, "achieved_rate": round(achieved, 1),
        "successful": ok, "failed": failed, "uac_retrans": retrans, "uas_retrans": uas_retrans,
        "uas_failed": uas_unexpected,
        "late_provisional": late,
        "udp_drops": drops,
        "udp_drops_balancer": drops_balancer, "udp_drops_uas": drops_uas,
        "udp_drops_uac": max(0, drops - drops_balancer - drops_uas),
        "clean": not reasons, "why_not_clean": "; ".join(reasons),
        "balancer_cpu_s": round(bcpu, 4),
        "cpu_s_per_1000_calls": round(bcpu / max(1, ok) * 1000, 4),
        # What /proc's 10 ms ticks gave for the same trial, the figure before 2026-12-07.
        "cpu_s_per_1000_calls_ticks": round(bcpu_ticks / max(1, ok) * 1000, 3),
        "kernel_cpu_s_per_1000_calls": (round(share * bcpu / max(1, ok) * 1000, 3)
                                        if share is not None else float("nan")),
        "balancer_cpu_pct": round(bcpu / wall * 100, 1),
        "sipp_cpu_s": round((uac_cpu or 0) + uas_cpu, 2),
        "cpu_pressure_pct": round(busy, 1),
        # Time the host ran something else on the vCPUs (summed over them, as a share of
        # one): a trial on a machine whose neighbours are busy costs more per call.
        "steal_pct": round(steal / wall * 100, 1),
        "setup_p50_ms": round(pct(lat, 50), 3), "setup_p99_ms": round(pct(lat, 99), 3),
        "path_p50_ms": round(pct(path_lat, 50), 3), "path_p99_ms": round(pct(path_lat, 99), 3),
        "sipp_rtd_p50_ms": pct(rtd, 50), "sipp_rtd_p99_ms": pct(rtd, 99),
        "spread": "/".join(str(c) for c in counts),
        "wall_s": round(wall, 1), "loadavg_before": load0, "dir": os.path.basename(d),
    }
    log(f"  {system:8} {rate:5}/s: {'clean' if row['clean'] else 'NOT clean (' + row['why_not_clean'] + ')'}; "
        f"cpu {row['cpu_s_per_1000_calls']:.3f} s/1000 calls ({row['balancer_cpu_pct']}% of a core), "
        f"setup p50 {row['setup_p50_ms']} ms p99 {row['setup_p99_ms']} ms"
        + (f" (path alone p50 {row['path_p50_ms']} p99 {row['path_p99_ms']})" if uas_trace else "")
        + f", spread {row['spread']}, " + (f"{late} late 180s, " if late else "")
        + (f"{drops} datagrams dropped by full socket buffers (balancer {drops_balancer}, destinations "
           f"{drops_uas}, caller {max(0, drops - drops_balancer - drops_uas)}), " if drops else "") +
        f"CPU pressure {row['cpu_pressure_pct']}%, steal {row['steal_pct']}%")
    if not args.keep:
        for name in os.listdir(d):
            if name.endswith("_short.log"):
                os.remove(os.path.join(d, name))
    return row


def start_kernel_sampler(bench, d, pids):
    """perf sampling the balancer's threads while they run (cpu-clock, 999 Hz): the share
    of the samples taken in the kernel is the kernel's share of the balancer's CPU.
    /proc's utime/stime split cannot tell it: it comes from the 250 Hz tick, which lands
    in few of the 20 us turns of a lightly loaded process (on this kind of machine it
    gave Kamailio 27% where perf gives 41%). perf costs the balancer some CPU of its own
    (its hooks run at every thread switch), so it is only attached with --kernel-share.
    None otherwise, or when perf is missing."""
    if not bench.args.kernel_share or not pids or not shutil.which("perf"):
        return None
    data = os.path.join(d, "kernel-share.data")
    argv = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", ",".join(str(p) for p in pids), "-o", data]
    return bench.procs.start("perf-kernel-share", argv, d), data


def stop_kernel_sampler(bench, d, sampler):
    """The kernel's share of the samples (0..1), or None; the samples are removed."""
    if sampler is None:
        return None
    p, data = sampler
    bench.procs.stop(p, sig=signal.SIGINT, grace=10.0)
    try:
        out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "--stdio", "-q"],
                             capture_output=True, text=True, timeout=60, cwd=d).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    if os.path.exists(data):
        os.remove(data)
    return kernel_share(out.splitlines())


class Balancer:
    """How to start one system under test; each trial gets a fresh one, so no state
    (destinations disabled by failover, transactions still retransmitting, counters)
    carries from one trial into the next."""

    def __init__(self, name, bench):
        self.name, self.bench = name, bench
        self.target = {"siplb": SIPLB, "kamailio": KAMAILIO, "relay": RELAY, "direct": (UAS_IPS[0], UAS_PORT)}[name]

    def start(self):
        b = self.bench
        if self.name == "siplb":
            return start_siplb(b.procs, b.binary, b.work, workers=b.args.workers, persist=b.persist,
                               cluster=b.cluster, wrapper=b.balancer_wrap, destinations=b.args.destinations)
        if self.name == "kamailio":
            return start_kamailio(b.procs, b.work, children=b.args.kamailio_children, wrapper=b.balancer_wrap,
                                  destinations=b.args.destinations,
                                  tuned=not b.args.kamailio_default)
        if self.name == "relay":
            return start_relay(b.procs, b.work, wrapper=b.balancer_wrap)
        return None, []

    def trial(self, rate, calls, uas_trace=False, sample_kernel=False):
        p, pids = self.start()
        try:
            return run_trial(self.bench, self.name, self.target, pids, rate, calls, uas_trace=uas_trace,
                             sample_kernel=sample_kernel)
        finally:
            if p is not None:
                self.bench.procs.stop(p)
