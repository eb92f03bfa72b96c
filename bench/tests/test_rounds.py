"""bench/compare's rounds of trials (one per system, alternating): a round during which
the host stole too much of the machine is run again and left out of the medians, with
made-up systems whose trials report the steal they are given."""

import argparse
import unittest

from siplb_bench import stats
from siplb_bench.compare import run_round, step_rates


class Scripted:
    """A system whose n-th trial reports the n-th steal of `steals` (in % of a vCPU) and a
    CPU per call that tells the trials apart."""

    def __init__(self, name, steals):
        self.name, self.steals, self.n = name, list(steals), 0

    def trial(self, rate, calls, sample_kernel=False):
        steal = self.steals[self.n]
        self.n += 1
        return {"system": self.name, "rate": rate, "clean": True, "steal_pct": steal,
                "cpu_s_per_1000_calls": float(self.n), "achieved_rate": float(rate),
                "kernel_cpu_s_per_1000_calls": float("nan"), "balancer_cpu_pct": 1.0,
                "sipp_cpu_s": 1.0, "wall_s": 10.0, "cpu_pressure_pct": 1.0, "setup_p50_ms": 1.0,
                "setup_p99_ms": 2.0, "spread": "25/25/25/25", "late_provisional": 0,
                "udp_drops_balancer": 0, "udp_drops_uas": 0, "udp_drops_uac": 0, "why_not_clean": ""}


def options(**kw):
    base = {"max_steal": 5.0, "steal_retries": 2, "trials": 1, "trial_seconds": 1.0}
    base.update(kw)
    return argparse.Namespace(**base)


class RunRound(unittest.TestCase):
    def test_a_quiet_round_is_kept_as_it_ran(self):
        a, b = Scripted("siplb", [0.4]), Scripted("kamailio", [5.0])
        kept, discarded = run_round(options(), [a, b], 100, 1000)
        self.assertEqual((kept["siplb"]["cpu_s_per_1000_calls"], kept["kamailio"]["steal_pct"]), (1.0, 5.0))
        self.assertEqual(discarded, [])

    def test_steal_in_either_trial_runs_both_again(self):
        # Only Kamailio's trial of the first round was robbed; siplb's is run again too,
        # so the two kept trials shared the machine as it was then.
        a, b = Scripted("siplb", [0.0, 0.2]), Scripted("kamailio", [40.0, 1.0])
        kept, discarded = run_round(options(), [a, b], 100, 1000)
        self.assertEqual([kept["siplb"]["cpu_s_per_1000_calls"], kept["kamailio"]["cpu_s_per_1000_calls"]],
                         [2.0, 2.0])
        self.assertEqual(sorted(r["system"] for r in discarded), ["kamailio", "siplb"])
        self.assertTrue(all(r["discarded"] == "steal 40.0% over 5.0%" for r in discarded))

    def test_the_last_try_is_kept_whatever_it_lost(self):
        a = Scripted("siplb", [30.0, 20.0, 10.0])
        kept, discarded = run_round(options(), [a], 100, 1000)
        self.assertEqual(kept["siplb"]["steal_pct"], 10.0)
        self.assertNotIn("discarded", kept["siplb"])
        self.assertEqual(len(discarded), 2)
        kept, discarded = run_round(options(steal_retries=0), [Scripted("siplb", [30.0])], 100, 1000)
        self.assertEqual((kept["siplb"]["steal_pct"], discarded), (30.0, []))

    def test_the_medians_leave_the_rounds_run_again_out(self):
        a, b = Scripted("siplb", [9.0, 0.0]), Scripted("kamailio", [0.0, 0.0])
        rows = step_rates(options(), [a, b], [100])
        self.assertEqual(len(rows), 4)
        summary = stats.summarise(rows, ["siplb", "kamailio"])
        self.assertEqual([(s["system"], s["trials"], s["cpu_s_per_1000_calls"]) for s in summary],
                         [("siplb", 1, 2.0), ("kamailio", 1, 2.0)])


if __name__ == "__main__":
    unittest.main()
