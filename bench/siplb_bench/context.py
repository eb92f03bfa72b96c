"""The state one run of bench/compare carries from phase to phase, in one object passed
explicitly: no module of the package keeps mutable state of its own, so that the signal
handler, the error path and every phase end and count the same things."""

import argparse
from dataclasses import dataclass

from siplb_bench.procs import Procs


@dataclass
class Bench:
    args: argparse.Namespace
    procs: Procs    # every process the run started, ended by PID on the way out
    binary: str     # the siplb under test
    work: str       # the run's scratch directory (trial directories, configurations)
    trials_run: int = 0  # numbers the trial directories and picks each caller's port

    @property
    def persist(self):
        """siplb's [dialog] persist: on, as by default, unless --no-persist (to measure
        what storing calls costs; Kamailio's configuration stores nothing)."""
        return not self.args.no_persist

    @property
    def cluster(self):
        """Run siplb as a one-node [cluster] on the local Redis (--cluster): what sharing
        the load costs per call (a reservation per new call, a release per ended one)."""
        return self.args.cluster

    @property
    def balancer_wrap(self):
        """The command the balancer under test (or the relay) runs under: on CPU 0 alone
        with --pin; at a lower nice value with --nice, so that the SIPp processes it wakes
        do not preempt it while it still has datagrams in hand."""
        nice = self.args.nice
        return ((("taskset", "-c", "0") if self.args.pin else ())
                + (("nice", "-n", str(nice)) if nice else ()))

    @property
    def sipp_wrap(self):
        """The command every SIPp of a trial runs under: on CPU 1 with --pin, so that the
        balancer and the load it answers never take turns on one core."""
        return ("taskset", "-c", "1") if self.args.pin else ()

    def next_trial(self):
        self.trials_run += 1
        return self.trials_run
