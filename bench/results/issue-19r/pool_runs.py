"""Pools the trials of several full runs of bench/compare (their compare-trials.csv):
per step, each run's ratio of medians, and the ratio of the medians of all their
clean trials. Usage: python3 pool_runs.py RUN_DIR [RUN_DIR ...]"""
import csv
import statistics
import sys


def trial_number(row):
    return int(row["dir"].split("-")[0].removeprefix("trial"))


def trials(run_dir):
    """The CPU steps' trials: those before the latency section, whose rounds start
    with the direct path."""
    with open(f"{run_dir}/compare-trials.csv") as f:
        rows = list(csv.DictReader(f))
    latency = [trial_number(r) for r in rows if r["system"] in ("direct", "relay")]
    first_latency = min(latency, default=None)
    return [r for r in rows if first_latency is None or trial_number(r) < first_latency]


def cpu_by_step(rows):
    steps = {}
    for r in rows:
        if r.get("discarded"):  # a round run again: the host stole too much during it
            continue
        key = (r["system"], int(r["rate"]))
        steps.setdefault(key, []).append((r["clean"] == "True", float(r["cpu_s_per_1000_calls"])))
    return steps


def main(run_dirs):
    runs = [cpu_by_step(trials(d)) for d in run_dirs]
    rates = sorted({rate for run in runs for (system, rate) in run if system == "kamailio"})
    head = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    print(f"| calls/s | {head} | all trials pooled | at most 0.5 pooled |")
    print("|---|" + "---|" * (len(runs) + 2))
    for rate in rates:
        cells, pooled = [], {"siplb": [], "kamailio": []}
        for run in runs:
            s, k = run.get(("siplb", rate), []), run.get(("kamailio", rate), [])
            clean = s and k and all(c for c, _ in s) and all(c for c, _ in k)
            if not (s and k):
                cells.append("-")
                continue
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
        print(f"| {rate} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
