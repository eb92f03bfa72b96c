"""The command line both the profile-guided build's training and bench/ab-builds run."""

import os
import unittest

from siplb_bench import steps


class SiplbAlone(unittest.TestCase):
    def test_it_drives_the_given_binary_alone_one_trial_per_step_without_building(self):
        argv = steps.siplb_steps_argv("/t/siplb", "/t/out", "100,200", 3)
        self.assertTrue(argv[1].endswith(os.path.join("bench", "compare")))
        for pair in (["--siplb", "/t/siplb"], ["--systems", "siplb"], ["--rates", "100,200"],
                     ["--trials", "1"], ["--trial-seconds", "3"], ["--results", "/t/out"]):
            i = argv.index(pair[0])
            self.assertEqual(argv[i:i + 2], pair)
        for flag in ("--no-build", "--no-memory", "--no-latency"):
            self.assertIn(flag, argv)


if __name__ == "__main__":
    unittest.main()
