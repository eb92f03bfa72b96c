"""Pure functions: the statistics the benchmarks report (percentiles, medians per step,
the highest clean step, a least-squares slope, number formatting) and the parsers of
what SIPp, perf, callgrind and heaptrack write.

Nothing here opens a file or a process: every parser takes the file's lines (an open
file, or a list of strings in a test) and readers.py does the opening, so that these can
be tested on small hand-made inputs.
"""

import csv
import statistics

from siplb_bench.layout import UAS_IPS


# ---------------------------------------------------------------- statistics

def pct(vals, q):
    if not vals:
        return float("nan")
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, int(round(q / 100.0 * len(s) + 0.5)) - 1))]


def summarise(rows, systems):
    """Per system and step: medians over the trials, leaving out those run again
    (`discarded`: the host stole too much of the machine during them)."""
    out = []
    for system in systems:
        by_rate = {}
        for r in rows:
            if r["system"] == system and not r.get("discarded"):
                by_rate.setdefault(r["rate"], []).append(r)
        for rate, rs in sorted(by_rate.items()):
            med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
            # Rows written before a field existed (a redrawn chart) have no value for it.
            med_opt = lambda k: med(k) if all(k in r for r in rs) else float("nan")  # noqa: E731
            spread = [sum(int(r["spread"].split("/")[i]) for r in rs) for i in range(len(UAS_IPS))]
            total = max(1, sum(spread))
            out.append({
                "system": system, "rate": rate, "trials": len(rs),
                "clean_trials": sum(1 for r in rs if r["clean"]),
                "achieved_rate": med("achieved_rate"),
                "cpu_s_per_1000_calls": med("cpu_s_per_1000_calls"),
                "cpu_s_per_1000_calls_ticks": med_opt("cpu_s_per_1000_calls_ticks"),
                "kernel_cpu_s_per_1000_calls": med("kernel_cpu_s_per_1000_calls"),
                "balancer_cpu_pct": med("balancer_cpu_pct"),
                "sipp_cpu_pct": round(statistics.median(r["sipp_cpu_s"] / r["wall_s"] * 100 for r in rs), 1),
                "cpu_pressure_pct": med("cpu_pressure_pct"),
                "setup_p50_ms": med("setup_p50_ms"), "setup_p99_ms": med("setup_p99_ms"),
                "spread_pct": "/".join(f"{c / total * 100:.1f}" for c in spread),
                "late_provisional": sum(r["late_provisional"] for r in rs),
                "udp_drops": "/".join(str(sum(r[k] for r in rs)) for k in
                                      ("udp_drops_balancer", "udp_drops_uas", "udp_drops_uac")),
                "why_not_clean": "; ".join(sorted({r["why_not_clean"] for r in rs if r["why_not_clean"]})),
            })
    return out


def ratios(summary, system="siplb", peer="kamailio"):
    """Per step both systems ran: `system`'s CPU per call over `peer`'s (medians), and
    `system`'s kernel time alone over `peer`'s whole CPU, the lowest ratio `system` could
    reach at that step if its own code cost nothing; and whether every trial of both
    was clean. `ticks_ratio` is the same ratio from /proc's 10 ms ticks, the measure
    before 2026-12-07, which undercounted a freshly started Kamailio (trials.py)."""
    mine = {s["rate"]: s for s in summary if s["system"] == system}
    out = []
    for s in summary:
        m = mine.get(s["rate"])
        if s["system"] != peer or m is None or not s["cpu_s_per_1000_calls"]:
            continue
        out.append({
            "rate": s["rate"],
            "ratio": m["cpu_s_per_1000_calls"] / s["cpu_s_per_1000_calls"],
            "kernel_ratio": m["kernel_cpu_s_per_1000_calls"] / s["cpu_s_per_1000_calls"],
            "ticks_ratio": (m.get("cpu_s_per_1000_calls_ticks", float("nan"))
                            / (s.get("cpu_s_per_1000_calls_ticks") or float("nan"))),
            "clean": m["clean_trials"] == m["trials"] and s["clean_trials"] == s["trials"],
        })
    return sorted(out, key=lambda r: r["rate"])


def peak(summary, system):
    best = None
    for s in summary:
        if s["system"] == system and s["clean_trials"] == s["trials"]:
            best = s if best is None or s["rate"] > best["rate"] else best
    return best


def slope(points):
    """Least-squares slope of RSS over calls answered: memory per added call once the
    ramp is steady (as many INVITE transactions end as start, their memory reused), so
    the calls' own memory, without the transactions' 32 s tail. "" if too few points."""
    if len(points) < 5 or points[-1][0] - points[0][0] < 1000:
        return ""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return round(sum((x - mx) * (y - my) for x, y in points) / sxx) if sxx else ""


def fmt(v, digits=3):
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


# ---------------------------------------------------------------- SIPp's files

def last_stat_row(lines):
    """The last line of a SIPp statistics file (`-trace_stat`, ';'-separated, a header
    line first), as a dict keyed by the header; {} if there is no data line yet."""
    rows = [r for r in csv.reader(lines, delimiter=";") if r]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def stat_int(d, key):
    try:
        return int(d.get(key, "0") or 0)
    except ValueError:
        return 0


def setup_latencies(lines, hold=None):
    """From SIPp's short message trace (microsecond timestamps): for each call, INVITE
    sent (first transmission) to 200 OK received; and how many INVITEs and BYEs were sent
    again. With `hold` (Call-ID -> ms the destination held the INVITE, uas_hold_ms), also
    the setup time less that: the path's own share.

    Returns (setup ms per call, path ms per call, rate the INVITEs were first sent at,
    provisional replies that arrived after their call's 200)."""
    sent, lat, path_lat, invites, byes, answered, late = {}, [], [], 0, 0, set(), 0
    first_t = last_t = None
    for line in lines:
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 7:
            continue
        t, way, callid, cseq, first = float(parts[2]), parts[3], parts[4], parts[5], parts[6]
        if way == "S" and first.startswith("INVITE "):
            invites += 1
            if callid not in sent:
                sent[callid] = t
                first_t = t if first_t is None else first_t
                last_t = t
        elif way == "S" and first.startswith("BYE "):
            byes += 1
        elif way == "R" and first.startswith("SIP/2.0 1") and callid in answered:
            late += 1  # a provisional reply that arrived after the 200 it preceded
        elif way == "R" and first.startswith("SIP/2.0 200") and cseq.endswith("INVITE"):
            answered.add(callid)
            t0 = sent.pop(callid, None)
            if t0 is not None:
                lat.append((t - t0) * 1000.0)
                if hold and callid in hold:
                    path_lat.append(lat[-1] - hold[callid])
    started = invites and len(lat) + len(sent)
    rate = (started - 1) / (last_t - first_t) if started and started > 1 and last_t > first_t else 0.0
    return lat, path_lat, rate, late


def uas_hold_ms(lines):
    """From the destinations' short message traces (all of them, one after the other):
    per Call-ID, INVITE received to 200 OK sent, the part of the setup time spent inside
    the SIPp UAS."""
    got, hold = {}, {}
    for line in lines:
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 7:
            continue
        t, way, callid, cseq, first = float(parts[2]), parts[3], parts[4], parts[5], parts[6]
        if way == "R" and first.startswith("INVITE ") and callid not in got:
            got[callid] = t
        elif way == "S" and first.startswith("SIP/2.0 200") and cseq.endswith("INVITE"):
            if callid in got and callid not in hold:
                hold[callid] = (t - got[callid]) * 1000.0
    return hold


def rtd_values(lines):
    """SIPp's own response-time measure (INVITE to 200, whole milliseconds) from a
    `-trace_rtt` file: ';'-separated, the value second, a "Date_ms;..." header."""
    vals = []
    for line in lines:
        parts = line.split(";")
        if len(parts) >= 2 and parts[0] != "Date_ms":
            vals.append(float(parts[1]))
    return vals


# ---------------------------------------------------------------- profilers' files

def kernel_share(lines):
    """`perf report --no-children --sort dso --stdio -q` output: the share of the samples
    taken in the kernel (0..1), or None when there are no samples."""
    total = kernel = 0.0
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or not parts[0].endswith("%"):
            continue
        try:
            share = float(parts[0][:-1])
        except ValueError:
            continue
        total += share
        if parts[1].startswith("[kernel") or parts[1].startswith("[guest.kernel"):
            kernel += share
    return kernel / total if total else None


def perf_counters(lines):
    """`perf stat -x ,` output: counter name -> value (comments and counters perf could
    not read left out)."""
    counters = {}
    for line in lines:
        parts = line.strip().split(",")
        if len(parts) > 2 and parts[0] and not line.startswith("#"):
            try:
                counters[parts[2]] = float(parts[0])
            except ValueError:
                pass
    return counters


def callgrind_functions(lines):
    """Per function (by name, over all the source files inlined into it): instructions
    spent in the function itself, instructions including its callees, and how many times
    it was called, from a callgrind output file's lines."""
    names, self_ir, incl_ir, calls = {}, {}, {}, {}
    fn = cfn = None
    skip_next = False
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith(("fn=", "cfn=")):
            ref, _, name = line.split("=", 1)[1].partition(" ")
            if name:
                names[ref] = name
            if line.startswith("fn="):
                fn = ref
            else:
                cfn = ref
            continue
        if line.startswith("calls="):
            calls[cfn] = calls.get(cfn, 0) + int(line.split("=")[1].split()[0])
            skip_next = True
            continue
        if fn is None or not line or not (line[0].isdigit() or line[0] in "+-*"):
            continue
        cost = int(line.split()[-1])
        if skip_next:  # the inclusive cost of the call just named
            incl_ir[fn] = incl_ir.get(fn, 0) + cost
            skip_next = False
        else:
            self_ir[fn] = self_ir.get(fn, 0) + cost
            incl_ir[fn] = incl_ir.get(fn, 0) + cost
    out = {}
    for ref in set(self_ir) | set(calls):
        name = names.get(ref, ref)
        o = out.setdefault(name, [0, 0, 0])
        o[0] += self_ir.get(ref, 0)
        o[1] += incl_ir.get(ref, 0)
        o[2] += calls.get(ref, 0)
    return out


# Frames of the allocator's own plumbing, left out of heaptrack's stacks so that the
# innermost frames kept are siplb's code that asked for the memory.
ALLOC_PLUMBING = ("alloc", "__rdl", "_RNv", "try_allocate", "with_capacity", "allocate", "exchange_malloc",
                  "new<>", "finish_grow", "grow_", "reserve", "do_reserve", "__rust_alloc")


def heap_by_path(lines):
    """heaptrack_print's flame graph stacks ("frame;frame;... bytes" per line): bytes by
    allocating code path, its innermost seven frames below the last future poll, the
    allocator's plumbing left out."""
    rows = {}
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        polls = [i for i, fr in enumerate(frames) if fr.startswith("poll<> (raw.rs)")]
        inner = [fr for fr in frames[(polls[-1] + 1 if polls else 0):] if not fr.startswith(ALLOC_PLUMBING)]
        key = " > ".join(inner[-7:])
        rows[key] = rows.get(key, 0) + int(n)
    return rows
