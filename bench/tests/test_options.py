"""bench/compare's option parsers that check what they are given."""

import argparse
import unittest

from siplb_bench.compare import profile_tools


class ProfileToolsTest(unittest.TestCase):
    def test_a_subset_in_the_order_given(self):
        self.assertEqual(profile_tools("perf,callgrind"), ["perf", "callgrind"])

    def test_a_misspelt_or_empty_list_is_refused(self):
        for value in ("perf,heaps", "", ","):
            with self.assertRaises(argparse.ArgumentTypeError, msg=value):
                profile_tools(value)


if __name__ == "__main__":
    unittest.main()
