"""The profile-guided release build of siplb (`bench/build-pgo`).

At low call rates siplb's own code runs on cold caches: each datagram wakes the core
thread after other processes have had the CPU, and the same instructions cost about
five times as much as at 3000 calls/s (docs/BENCHMARKS-HISTORY.md, "Issue 19, seventh
round"). A build laid out by a profile of real calls (hot paths together, cold ones
apart, branches ordered as taken) loses less there. Steps:

1. an instrumented release build (`-Cprofile-generate`) in target/pgo-generate;
2. training: SIPp calls through it, with bench/compare's siplb-only steps (the
   benchmark's record-route-aware INVITE, 180, 200, ACK, BYE, 200 at a low, a middle
   and a high rate), siplb stopped by SIGTERM so that it writes its profile;
3. the profiles merged with llvm-profdata (rustup's llvm-tools, whose LLVM is rustc's);
4. the release build using them (`-Cprofile-use`) in target/pgo: target/pgo/release/siplb.

Needs root (bench/compare's SIPp and loopback addresses), about ten minutes on two cores.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys

from .layout import ROOT
from .log import log
from .steps import siplb_steps_argv

# The training's call rates: one where every datagram wakes the core, two where they queue.
TRAINING_RATES = "200,1000,3000"
TRAINING_SECONDS = 5


def profdata_tool(target_libdir):
    """Where rustup's llvm-tools component puts llvm-profdata for this toolchain: beside
    the host's library directory (`rustc --print target-libdir`)."""
    return os.path.join(os.path.dirname(target_libdir), "bin", "llvm-profdata")


def with_flag(existing, flag):
    """RUSTFLAGS with `flag` added to what the environment already sets."""
    return f"{existing} {flag}".strip() if existing else flag


def raw_profiles(directory):
    """The raw profiles a training left, sorted; an error if it left none (a siplb that
    was killed rather than stopped writes nothing)."""
    found = sorted(glob.glob(os.path.join(directory, "*.profraw")))
    if not found:
        raise RuntimeError(f"no profile in {directory}: did the instrumented siplb stop cleanly?")
    return found


def find_profdata():
    libdir = subprocess.run(["rustc", "--print", "target-libdir"], check=True, capture_output=True,
                            text=True).stdout.strip()
    tool = profdata_tool(libdir)
    if not os.path.exists(tool):
        log("rustup component add llvm-tools (llvm-profdata of rustc's own LLVM)")
        subprocess.run(["rustup", "component", "add", "llvm-tools"], check=True)
    if not os.path.exists(tool):
        raise RuntimeError(f"{tool} is missing after rustup component add llvm-tools")
    return tool


def cargo_build(target_dir, flag):
    env = dict(os.environ, RUSTFLAGS=with_flag(os.environ.get("RUSTFLAGS", ""), flag))
    log(f"cargo build --release -p siplb --target-dir {target_dir} (RUSTFLAGS {env['RUSTFLAGS']})")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "siplb", "--target-dir", target_dir],
                   cwd=ROOT, env=env, check=True)
    return os.path.join(target_dir, "release", "siplb")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default=TRAINING_RATES, help="training call rates (calls/s)")
    parser.add_argument("--seconds", type=int, default=TRAINING_SECONDS, help="seconds of calls per rate")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/build-pgo runs as root (its training uses bench/compare)", file=sys.stderr)
        return 2
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    work = os.path.join(target, "pgo-data")
    raw = os.path.join(work, "raw")
    profdata = os.path.join(work, "siplb.profdata")
    tool = find_profdata()
    shutil.rmtree(work, ignore_errors=True)
    instrumented = cargo_build(os.path.join(target, "pgo-generate"), f"-Cprofile-generate={raw}")
    # Build scripts ran instrumented too: only the training's profiles are kept.
    shutil.rmtree(raw, ignore_errors=True)
    os.makedirs(raw)
    log(f"training: SIPp calls at {args.rates} calls/s through {instrumented}")
    subprocess.run(siplb_steps_argv(instrumented, os.path.join(work, "training"), args.rates, args.seconds),
                   check=True)
    subprocess.run([tool, "merge", "-o", profdata, *raw_profiles(raw)], check=True)
    binary = cargo_build(os.path.join(target, "pgo"), f"-Cprofile-use={profdata}")
    log(f"built {binary}")
    return 0
