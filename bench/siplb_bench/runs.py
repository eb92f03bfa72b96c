"""Several full runs of `bench/compare` read together, from their compare-trials.csv:
pooled (each run's ratio of medians, and the ratio of the medians of all their clean
trials) and paired (each siplb trial over the Kamailio trial of its own round, the median
taken per run and over all runs). Where the machine drifts between rounds or runs, a
pair shares its state; a median of all trials pooled does not.

The readings of issue 19's rounds (`bench/results/issue-19r/pool_runs.py`,
`bench/results/issue-19v/paired_ratios.py`, which call this module); `bench/compare`
pairs its own run's rounds with it for `compare.md`.
"""

import csv
import os
import statistics


def trial_number(row):
    """The trial's place in its run, from its directory name (`trial007-siplb-100`)."""
    return int(row["dir"].split("-")[0].removeprefix("trial"))


def cpu_step_trials(rows):
    """The CPU steps' trials: those before the latency section, whose rounds start with
    the direct path."""
    latency = [trial_number(r) for r in rows if r["system"] in ("direct", "relay")]
    first_latency = min(latency, default=None)
    return [r for r in rows if first_latency is None or trial_number(r) < first_latency]


def read_trials(run_dir):
    """cpu_step_trials of one run's compare-trials.csv."""
    with open(os.path.join(run_dir, "compare-trials.csv"), newline="") as f:
        return cpu_step_trials(list(csv.DictReader(f)))


def cpu_by_step(rows):
    """{(system, rate): [(clean, CPU s per 1000 calls)]} in the order the trials ran;
    trials of a round run again for the host's steal (`discarded`) left out. The rows
    are a compare-trials.csv's (strings) or `bench/compare`'s own (`clean` a bool)."""
    steps = {}
    for r in rows:
        if r.get("discarded"):
            continue
        key = (r["system"], int(r["rate"]))
        steps.setdefault(key, []).append((str(r["clean"]) == "True", float(r["cpu_s_per_1000_calls"])))
    return steps


def pooled_table(runs):
    """The pooled reading of runs given as cpu_by_step dicts, as Markdown lines."""
    rates = sorted({rate for run in runs for (system, rate) in run if system == "kamailio"})
    head = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    lines = [f"| calls/s | {head} | all trials pooled | at most 0.5 pooled |",
             "|---|" + "---|" * (len(runs) + 2)]
    for rate in rates:
        cells, pooled = [], {"siplb": [], "kamailio": []}
        for run in runs:
            s, k = run.get(("siplb", rate), []), run.get(("kamailio", rate), [])
            if not (s and k):
                cells.append("-")
                continue
            clean = all(c for c, _ in s) and all(c for c, _ in k)
            ratio = statistics.median(v for _, v in s) / statistics.median(v for _, v in k)
            cells.append(f"{ratio:.3f}" + ("" if clean else " (not clean)"))
            if clean:
                pooled["siplb"] += [v for _, v in s]
                pooled["kamailio"] += [v for _, v in k]
        if pooled["siplb"]:
            ratio = statistics.median(pooled["siplb"]) / statistics.median(pooled["kamailio"])
            n = len(pooled["siplb"])
            cells += [f"{ratio:.3f} ({n} trials each)", "yes" if ratio <= 0.5 else "no"]
        else:
            cells += ["-", "-"]
        lines.append(f"| {rate} | " + " | ".join(cells) + " |")
    return lines


def round_pairs(steps):
    """{rate: [siplb / Kamailio per round]} of one run's cpu_by_step: the k-th kept siplb
    trial of a step over the k-th kept Kamailio trial (`bench/compare` runs one of each
    per round, and a round run again is left out for both), counted only when both are
    clean."""
    out = {}
    for (system, rate), ours in steps.items():
        theirs = steps.get(("kamailio", rate), [])
        if system == "siplb" and theirs:
            out[rate] = [a / b for (ca, a), (cb, b) in zip(ours, theirs) if ca and cb and b > 0]
    return out


def pairs_cell(ratios):
    """The median of some pairs' ratios and how many there were, as a table cell."""
    if not ratios:
        return "- (no clean pair)"
    return f"{statistics.median(ratios):.3f} ({len(ratios)} pairs)"


def paired_table(runs):
    """The paired reading of runs given as round_pairs dicts, as Markdown lines."""
    rates = sorted({rate for run in runs for rate in run})
    head = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    lines = [f"| calls/s | {head} | all runs' pairs |", "|---" * (len(runs) + 2) + "|"]
    for rate in rates:
        cells = [f"{statistics.median(run[rate]):.3f}" if run.get(rate) else "-" for run in runs]
        every = [x for run in runs for x in run.get(rate, [])]
        lines.append(f"| {rate} | {' | '.join(cells)} | {pairs_cell(every)} |")
    return lines


def pooled_main(run_dirs):
    print("\n".join(pooled_table([cpu_by_step(read_trials(d)) for d in run_dirs])))


def paired_main(run_dirs):
    print("\n".join(paired_table([round_pairs(cpu_by_step(read_trials(d))) for d in run_dirs])))
