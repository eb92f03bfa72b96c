"""Full runs read together (siplb_bench/runs.py): which trials count, how rounds pair,
and the pooled and paired tables, on rows shaped like compare-trials.csv's."""

import csv
import os
import tempfile
import unittest

from siplb_bench import runs

FIELDS = ["system", "rate", "clean", "cpu_s_per_1000_calls", "dir", "discarded"]


def row(n, system, rate, cpu, clean=True, discarded=""):
    return {"system": system, "rate": str(rate), "clean": str(clean), "cpu_s_per_1000_calls": str(cpu),
            "dir": f"trial{n:03d}-{system}-{rate}", "discarded": discarded}


class Trials(unittest.TestCase):
    def test_the_latency_section_and_what_follows_it_are_not_cpu_steps(self):
        rows = [row(1, "siplb", 100, 0.3), row(2, "kamailio", 100, 0.6),
                row(3, "direct", 1000, 0.0), row(4, "siplb", 1000, 0.1), row(5, "siplb", 200, 0.2)]
        self.assertEqual([r["dir"] for r in runs.cpu_step_trials(rows)],
                         ["trial001-siplb-100", "trial002-kamailio-100"])

    def test_without_a_latency_section_every_trial_is_a_cpu_step(self):
        rows = [row(1, "siplb", 100, 0.3), row(2, "kamailio", 100, 0.6)]
        self.assertEqual(len(runs.cpu_step_trials(rows)), 2)

    def test_a_round_run_again_for_steal_is_left_out_in_trial_order(self):
        rows = [row(1, "siplb", 100, 0.9, discarded="yes"), row(2, "kamailio", 100, 0.9, discarded="yes"),
                row(3, "siplb", 100, 0.3), row(4, "kamailio", 100, 0.6, clean=False)]
        self.assertEqual(runs.cpu_by_step(rows),
                         {("siplb", 100): [(True, 0.3)], ("kamailio", 100): [(False, 0.6)]})

    def test_bench_compares_own_rows_read_as_the_files_do(self):
        # bench/compare pairs its rows before writing them: `clean` a bool, numbers as
        # numbers, no `discarded` on a kept trial.
        rows = [{"system": "siplb", "rate": 100, "clean": True, "cpu_s_per_1000_calls": 0.3},
                {"system": "kamailio", "rate": 100, "clean": False, "cpu_s_per_1000_calls": 0.6}]
        self.assertEqual(runs.cpu_by_step(rows),
                         {("siplb", 100): [(True, 0.3)], ("kamailio", 100): [(False, 0.6)]})

    def test_a_run_directory_is_read_from_its_trials_file(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "compare-trials.csv"), "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=FIELDS)
                w.writeheader()
                w.writerows([row(1, "siplb", 100, 0.3), row(2, "kamailio", 100, 0.6), row(3, "relay", 1000, 0.1)])
            self.assertEqual(len(runs.read_trials(d)), 2)


class Pairs(unittest.TestCase):
    def test_each_round_pairs_its_own_trials_and_an_unclean_one_drops_only_its_pair(self):
        steps = {("siplb", 100): [(True, 0.3), (True, 0.2), (False, 0.9)],
                 ("kamailio", 100): [(True, 0.6), (False, 0.1), (True, 0.5)],
                 ("siplb", 4000): [(True, 0.08)]}
        got = runs.round_pairs(steps)
        # Round 2 (Kamailio not clean) and round 3 (siplb not clean) count for nothing;
        # 4000 calls/s, where Kamailio did not run, has no pairs at all.
        self.assertEqual(list(got), [100])
        self.assertEqual(len(got[100]), 1)
        self.assertAlmostEqual(got[100][0], 0.5)

    def test_the_paired_table_gives_each_runs_median_and_all_runs_pairs_pooled(self):
        lines = runs.paired_table([{100: [0.4, 0.5, 0.45]}, {100: [0.6], 200: [0.3]}])
        self.assertEqual(lines[0], "| calls/s | run 1 | run 2 | all runs' pairs |")
        self.assertEqual(lines[2], "| 100 | 0.450 | 0.600 | 0.475 (4 pairs) |")
        self.assertEqual(lines[3], "| 200 | - | 0.300 | 0.300 (1 pairs) |")

    def test_a_step_with_no_clean_pair_says_so(self):
        self.assertEqual(runs.paired_table([{100: []}])[2], "| 100 | - | - (no clean pair) |")


class Pooled(unittest.TestCase):
    def test_a_run_with_an_unclean_trial_is_shown_but_not_pooled(self):
        first = {("siplb", 100): [(True, 0.2), (True, 0.3)], ("kamailio", 100): [(True, 0.5), (True, 0.7)]}
        second = {("siplb", 100): [(True, 0.4)], ("kamailio", 100): [(False, 0.6)]}
        lines = runs.pooled_table([first, second])
        self.assertEqual(lines[0], "| calls/s | run 1 | run 2 | all trials pooled | at most 0.5 pooled |")
        # Pooled: the first run's trials only, 0.25 / 0.6.
        self.assertEqual(lines[2], "| 100 | 0.417 | 0.667 (not clean) | 0.417 (2 trials each) | yes |")

    def test_a_step_only_siplb_reached_is_not_a_row(self):
        lines = runs.pooled_table([{("siplb", 5000): [(True, 0.06)], ("kamailio", 100): [(True, 0.5)],
                                    ("siplb", 100): [(True, 0.3)]}])
        self.assertEqual([line.split(" |")[0] for line in lines[2:]], ["| 100"])


if __name__ == "__main__":
    unittest.main()
