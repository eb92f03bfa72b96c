"""bench/ab-builds' pieces that do not run SIPp: the turns, the invocation, and how a
series' trials become pairs and the table."""

import contextlib
import csv
import io
import os
import tempfile
import unittest

from siplb_bench import ab

FIELDS = ["system", "rate", "clean", "cpu_s_per_1000_calls"]


def write_trials(d, rows):
    os.makedirs(d)
    with open(os.path.join(d, "compare-trials.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for system, rate, clean, cpu in rows:
            w.writerow({"system": system, "rate": rate, "clean": clean, "cpu_s_per_1000_calls": cpu})


class Turns(unittest.TestCase):
    def test_the_order_is_swapped_every_pair(self):
        self.assertEqual([ab.order(i) for i in range(4)],
                         [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A")])


class Reading(unittest.TestCase):
    def test_only_siplbs_clean_trials_count(self):
        rows = [{"system": "siplb", "rate": "100", "clean": "True", "cpu_s_per_1000_calls": "0.4"},
                {"system": "siplb", "rate": "200", "clean": "False", "cpu_s_per_1000_calls": "0.3"},
                {"system": "kamailio", "rate": "400", "clean": "True", "cpu_s_per_1000_calls": "0.6"}]
        self.assertEqual(ab.clean_cpu(rows), {100: 0.4})

    def test_a_trial_run_again_for_steal_does_not_stand_in_for_the_kept_one(self):
        # bench/compare writes a round run again before the kept one; here the run-again
        # trial was clean and the kept one not, so the step has no clean trial.
        rows = [{"system": "siplb", "rate": "100", "clean": "True", "cpu_s_per_1000_calls": "0.9",
                 "discarded": "steal 12.0% over 5.0%"},
                {"system": "siplb", "rate": "100", "clean": "False", "cpu_s_per_1000_calls": "0.4",
                 "discarded": ""}]
        self.assertEqual(ab.clean_cpu(rows), {})

    def test_a_step_counts_in_a_pair_only_where_both_builds_were_clean(self):
        by_rate = ab.pairs_by_rate([({100: 0.4, 200: 0.3}, {100: 0.36}), ({100: 0.5}, {100: 0.45, 200: 0.2})])
        self.assertEqual(by_rate, {100: [(0.4, 0.36), (0.5, 0.45)]})

    def test_the_ratio_is_the_median_of_the_pairs_not_of_the_medians(self):
        # Medians alone: B 0.30 / A 0.40 = 0.75; pair by pair 0.5, 0.9, 1.1 -> 0.9.
        rows = ab.summary_rows({100: [(0.2, 0.1), (0.4, 0.36), (0.5, 0.55)]})
        rate, n, a, b, ratio, less = rows[0]
        self.assertEqual((rate, n, less), (100, 3, 2))
        self.assertAlmostEqual(a, 0.4)
        self.assertAlmostEqual(b, 0.36)
        self.assertAlmostEqual(ratio, 0.9)

    def test_a_series_is_read_back_from_its_directories_and_an_unfinished_pair_left_out(self):
        with tempfile.TemporaryDirectory() as out:
            write_trials(ab.pair_dir(out, 0, "A"), [("siplb", 100, "True", 0.40), ("siplb", 200, "True", 0.30)])
            write_trials(ab.pair_dir(out, 0, "B"), [("siplb", 100, "True", 0.38), ("siplb", 200, "True", 0.33)])
            write_trials(ab.pair_dir(out, 1, "B"), [("siplb", 100, "True", 0.36)])
            os.makedirs(ab.pair_dir(out, 1, "A"))  # stopped before its trials file
            pairs = ab.read_series(out)
            self.assertEqual(pairs, [({100: 0.40, 200: 0.30}, {100: 0.38, 200: 0.33})])
            text = ab.report(ab.summary_rows(ab.pairs_by_rate(pairs)), "before", "after")
            self.assertIn("| 100 | 1 | 0.400 | 0.380 | 0.950 | 1 of 1 |", text)
            self.assertIn("| 200 | 1 | 0.300 | 0.330 | 1.100 | 0 of 1 |", text)

    def test_report_only_writes_the_table_beside_the_series(self):
        with tempfile.TemporaryDirectory() as out:
            write_trials(ab.pair_dir(out, 0, "A"), [("siplb", 100, "True", 0.40)])
            write_trials(ab.pair_dir(out, 0, "B"), [("siplb", 100, "True", 0.30)])
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(ab.main([out, "--report-only"]), 0)
            with open(os.path.join(out, "ab.md")) as f:
                self.assertIn("| 100 | 1 | 0.400 | 0.300 | 0.750 | 1 of 1 |", f.read())

    def test_several_series_read_together_pool_their_pairs(self):
        with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
            for out, (a, b) in ((first, (0.40, 0.30)), (second, (0.20, 0.22))):
                write_trials(ab.pair_dir(out, 0, "A"), [("siplb", 100, "True", a)])
                write_trials(ab.pair_dir(out, 0, "B"), [("siplb", 100, "True", b)])
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                self.assertEqual(ab.main([first, second, "--report-only"]), 0)
            # Two pairs: A 0.40 and 0.20 (median 0.30), B 0.30 and 0.22, ratios 0.75 and 1.1.
            self.assertIn("| 100 | 2 | 0.300 | 0.260 | 0.925 | 1 of 2 |", printed.getvalue())
            self.assertFalse(os.path.exists(os.path.join(first, "ab.md")))

    def test_a_series_is_run_into_one_directory(self):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            ab.main(["/t/one", "/t/two", "--a", "/t/a", "--b", "/t/b"])

    def test_a_series_is_not_run_into_a_directory_holding_one(self):
        with tempfile.TemporaryDirectory() as out:
            write_trials(ab.pair_dir(out, 0, "A"), [("siplb", 100, "True", 0.40)])
            stderr = io.StringIO()
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(stderr):
                ab.main([out, "--a", "/bin/true", "--b", "/bin/true"])
            self.assertIn("not empty", stderr.getvalue())

    def test_a_build_that_is_not_there_is_refused_before_any_trial(self):
        with tempfile.TemporaryDirectory() as out:
            stderr = io.StringIO()
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(stderr):
                ab.main([os.path.join(out, "series"), "--a", "/bin/true", "--b", os.path.join(out, "none")])
            self.assertIn("not an executable siplb", stderr.getvalue())
            self.assertFalse(os.path.exists(os.path.join(out, "series")))


if __name__ == "__main__":
    unittest.main()
