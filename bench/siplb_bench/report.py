"""What bench/compare leaves in the results directory: CSV tables (every trial, the
per-step summary, memory), the chart of CPU against call rate (gnuplot, PNG) and the
markdown report (compare.md) that docs/BENCHMARKS.md quotes.
"""

import csv
import os
import statistics
import subprocess

from siplb_bench.layout import KAMAILIO_SHM_MB
from siplb_bench.log import log
from siplb_bench.runs import pairs_cell
from siplb_bench.stats import fmt, peak, ratios


def write_csv(path, rows):
    if not rows:
        return
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def chart(results, summary, work):
    """calls/s against the balancer's CPU, both systems: gnuplot, PNG."""
    data = {}
    for system in ("siplb", "kamailio"):
        path = os.path.join(work, f"{system}.dat")
        with open(path, "w") as f:
            for s in summary:
                if s["system"] == system:
                    f.write(f"{s['achieved_rate']} {s['balancer_cpu_pct']} {s['cpu_s_per_1000_calls']} "
                            f"{s['clean_trials'] == s['trials']:d}\n")
        data[system] = path
    png = os.path.join(results, "compare.png")
    gp = os.path.join(work, "chart.gp")
    with open(gp, "w") as f:
        f.write(f"""set terminal pngcairo size 1100,450 font ",10"
set output "{png}"
set multiplot layout 1,2 title "siplb vs Kamailio 5.6 dispatcher (alg. 10, tuned): 100 ms calls, loopback, {os.cpu_count()} cores shared with SIPp"
set grid
set key top left
set xlabel "calls/s (reached by SIPp); hollow marks: step not clean in every trial"
set ylabel "balancer CPU, % of one core"
set yrange [0:*]
S = "{data['siplb']}"
K = "{data['kamailio']}"
plot S using 1:2 with lines lw 2 lc 1 title "siplb", \\
     S using 1:($4 == 1 ? $2 : 1/0) with points pt 7 ps 1.2 lc 1 notitle, \\
     S using 1:($4 == 0 ? $2 : 1/0) with points pt 6 ps 1.2 lc 1 notitle, \\
     K using 1:2 with lines lw 2 lc 2 title "Kamailio", \\
     K using 1:($4 == 1 ? $2 : 1/0) with points pt 5 ps 1.2 lc 2 notitle, \\
     K using 1:($4 == 0 ? $2 : 1/0) with points pt 4 ps 1.2 lc 2 notitle
set ylabel "balancer CPU seconds per 1000 calls"
plot S using 1:3 with lines lw 2 lc 1 title "siplb", \\
     S using 1:($4 == 1 ? $3 : 1/0) with points pt 7 ps 1.2 lc 1 notitle, \\
     S using 1:($4 == 0 ? $3 : 1/0) with points pt 6 ps 1.2 lc 1 notitle, \\
     K using 1:3 with lines lw 2 lc 2 title "Kamailio", \\
     K using 1:($4 == 1 ? $3 : 1/0) with points pt 5 ps 1.2 lc 2 notitle, \\
     K using 1:($4 == 0 ? $3 : 1/0) with points pt 4 ps 1.2 lc 2 notitle
unset multiplot
""")
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()}")
        return None
    return png


def stolen_kept_line(rows, max_steal):
    """The sentence naming the kept trials the host still stole more than `max_steal` %
    of a vCPU from, by step, or None. A round is run again at most --steal-retries
    times and its last try is kept whatever the host took, so a step's medians may
    hold such a trial, and the report says so."""
    by_rate = {}
    for r in rows:
        if not r.get("discarded") and r["steal_pct"] > max_steal:
            by_rate.setdefault(r["rate"], []).append(f"{r['system']} {r['steal_pct']}%")
    if not by_rate:
        return None
    steps = "; ".join(f"{rate} calls/s ({', '.join(trials)})" for rate, trials in sorted(by_rate.items()))
    return f"Kept on the last try with the host still stealing more than {max_steal}%: {steps}."


def ratio_table(steps, pairs=None):
    """The table of CPU ratios per step (`stats.ratios`), as Markdown lines. Three
    decimals: issue 19's target is "at most 0.5", and a 0.504 shown as 0.50 read as met.
    `pairs` ({rate: [ratios]}, `runs.round_pairs`) adds the paired reading: the median of
    each round's siplb trial over the Kamailio trial run right after it, both clean."""
    pairs = pairs or {}
    lines = ["| calls/s | siplb / Kamailio | at most 0.5 | siplb's kernel time / Kamailio | both clean "
             "| the same from 10 ms ticks (the measure before 2026-12-07) | paired: median of the rounds' ratios |",
             "|---|---|---|---|---|---|---|"]
    for r in steps:
        within = "yes" if r["ratio"] <= 0.5 else "no"
        paired = pairs_cell(pairs.get(r["rate"]))
        lines.append(f"| {r['rate']} | {fmt(r['ratio'], 3)} | {within} | {fmt(r['kernel_ratio'], 2)} | "
                     f"{'yes' if r['clean'] else 'no'} | {fmt(r.get('ticks_ratio', float('nan')), 3)} | {paired} |")
    return lines


def markdown(args, info, summary, latency, memory, load_before, load_after, started, elapsed, pairs=None):
    """compare.md's text, and each system's highest clean step. `pairs`: as ratio_table's."""
    lines = []
    mode = "smoke" if args.smoke else "full"
    lines.append(f"Run {started} ({mode}, {elapsed / 60:.1f} min), siplb {info['siplb_rev']}; "
                 f"{info['cpu']}, {info['cores']} cores, {info['memory']}, Linux {info['kernel']}; "
                 f"{info['sipp']}; {info['kamailio']}.")
    lines.append(f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.")
    if args.destinations != 4:
        lines.append(f"The balancers send to {args.destinations} of the four destinations (--destinations).")
    if args.pin:
        lines.append("Pinned (--pin): the balancer on CPU 0 alone, every SIPp (caller and destinations) on CPU 1.")
    if args.nice:
        lines.append(f"The balancer (and the relay) at nice {args.nice} (--nice), SIPp at 0.")
    lines.append(f"Calls: {args.call_ms} ms long, {args.trial_seconds} s of calls per trial, {args.trials} trials per step; "
                 f"siplb with its SIP core thread and {args.workers} tokio worker threads beside it, Kamailio with children={args.kamailio_children}, "
                 + ("the package's default allocator (q_malloc), 1 GB shared memory." if args.kamailio_default else
                    f"tuned: TLSF allocator (-x tlsf -X tlsf), 4 MB receive buffer (-b 4194304), {KAMAILIO_SHM_MB} MB shared memory."))
    max_steal, discarded = info["steal"]
    if args.steal_retries:
        lines.append(f"A round of trials (one per system) during which the host stole more than {max_steal}% of a "
                     f"vCPU was run again: {discarded} trials were, and are left out of the medians "
                     "(in compare-trials.csv, marked `discarded`).")
    else:
        lines.append("No round of trials was run again for the host's steal (--steal-retries 0, as in the smoke run).")
    if info.get("stolen_kept"):
        lines.append(info["stolen_kept"])
    lines.append("")
    lines.append("| system | calls/s offered | reached | clean trials | CPU s / 1000 calls | of which kernel | balancer CPU % of a core | SIPp CPU % of a core | CPU pressure % | setup p50 ms | setup p99 ms | spread over 4 destinations % | 180 after 200 | UDP drops at balancer/destinations/caller | not clean because |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        lines.append(f"| {s['system']} | {s['rate']} | {fmt(s['achieved_rate'], 0)} | {s['clean_trials']}/{s['trials']} | "
                     f"{fmt(s['cpu_s_per_1000_calls'])} | {fmt(s['kernel_cpu_s_per_1000_calls'])} | {fmt(s['balancer_cpu_pct'], 1)} | {fmt(s['sipp_cpu_pct'], 0)} | "
                     f"{fmt(s['cpu_pressure_pct'], 0)} | {fmt(s['setup_p50_ms'])} | {fmt(s['setup_p99_ms'])} | "
                     f"{s['spread_pct']} | {s['late_provisional']} | {s['udp_drops']} | {s['why_not_clean']} |")
    steps = ratios(summary)
    if steps:
        lines.append("")
        lines.append("CPU per call, siplb over Kamailio at each step (medians), and siplb's kernel time alone over "
                     "Kamailio's CPU: the lowest ratio siplb could reach there if its own code cost nothing "
                     + ("(perf attached to both during the steps, --kernel-share)." if args.kernel_share else
                        "(not sampled: --kernel-share)."))
        lines.append("")
        lines.extend(ratio_table(steps, pairs))
    lines.append("")
    lines.append("| system | highest clean rate (calls/s) | CPU s / 1000 calls there | setup p50 / p99 ms there | spread % there |")
    lines.append("|---|---|---|---|---|")
    peaks = {}
    for system in ("siplb", "kamailio"):
        pk = peak(summary, system)
        peaks[system] = pk
        if pk:
            lines.append(f"| {system} | {pk['rate']} | {fmt(pk['cpu_s_per_1000_calls'])} | "
                         f"{fmt(pk['setup_p50_ms'])} / {fmt(pk['setup_p99_ms'])} | {pk['spread_pct']} |")
        else:
            lines.append(f"| {system} | none clean | | | |")
    for rate in sorted({r["rate"] for r in latency}):
        at = [r for r in latency if r["rate"] == rate]
        lines.append("")
        lines.append(f"Call setup at {rate} calls/s ({at[0].get('why', '')}), "
                     f"{args.trials} trials each, medians:")
        lines.append("")
        lines.append("| path | setup p50 ms | setup p99 ms | p99 over direct ms | path alone p50 ms | path alone p99 ms | path alone p99 over direct ms | clean trials |")
        lines.append("|---|---|---|---|---|---|---|---|")
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        direct = [r for r in at if r["system"] == "direct"]
        for system in ["direct", "relay"] + list(args.systems):
            rs = [r for r in at if r["system"] == system]
            if not rs:
                continue
            over = lambda k: "" if system == "direct" else fmt(med(rs, k) - med(direct, k))  # noqa: E731
            lines.append(f"| {system} | {fmt(med(rs, 'setup_p50_ms'))} | {fmt(med(rs, 'setup_p99_ms'))} | {over('setup_p99_ms')} | "
                         f"{fmt(med(rs, 'path_p50_ms'))} | {fmt(med(rs, 'path_p99_ms'))} | {over('path_p99_ms')} | "
                         f"{sum(1 for r in rs if r['clean'])}/{len(rs)} |")
    if memory:
        lines.append("")
        lines.append(f"siplb resident memory with long calls up (set up at {args.memory_rate} calls/s, "
                     f"read {args.memory_settle} s after the last was answered):")
        lines.append("")
        lines.append("| calls up | RSS MB | RSS bytes per call over idle | RSS MB right after the ramp | bytes per added call, steady ramp |")
        lines.append("|---|---|---|---|---|")
        for m in memory:
            lines.append(f"| {m['calls_up']} | {m['rss_bytes'] / 1e6:.1f} | {m['bytes_per_call']} | "
                         f"{m['rss_at_ramp_end'] / 1e6:.1f} | {m['marginal_bytes_per_call']} |"
                         if m["calls_up"] else f"| 0 | {m['rss_bytes'] / 1e6:.1f} | | | |")
    return "\n".join(lines) + "\n", peaks
